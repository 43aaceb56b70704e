"""transfuse: transfer learning from pretrained networks.

The public API is imported lazily so that ``import transfuse`` stays light::

    from transfuse import FeatureExtractor, LogisticHead, load_model
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FeatureCache": "transfuse.cache",
    "Features": "transfuse.extract",
    "extract_features": "transfuse.extract",
    "write_features": "transfuse.extract",
    "on_cluster": "transfuse.extract",
    "features_in": "transfuse.extract",
    "FeatureExtractor": "transfuse.featurizers",
    "TfidfFeatures": "transfuse.featurizers.tfidf",
    "make_featurizer": "transfuse.featurizers",
    "BackboneSpec": "transfuse.backbones",
    "TapSpec": "transfuse.backbones",
    "WeightsSource": "transfuse.backbones",
    "create_backbone": "transfuse.backbones",
    "get_spec": "transfuse.backbones",
    "list_backbones": "transfuse.backbones",
    "register_backbone": "transfuse.backbones",
    "Head": "transfuse.heads",
    "LogisticHead": "transfuse.heads",
    "LinearSVMHead": "transfuse.heads",
    "RidgeHead": "transfuse.heads",
    "KNNHead": "transfuse.heads",
    "MLPHead": "transfuse.heads",
    "make_head": "transfuse.heads",
    "ConcatFusion": "transfuse.fusion",
    "WeightedFusion": "transfuse.fusion",
    "ScalarMixFusion": "transfuse.fusion",
    "GatedFusion": "transfuse.fusion",
    "make_fusion": "transfuse.fusion",
    "PCAReducer": "transfuse.selection",
    "VarianceSelector": "transfuse.selection",
    "KBestSelector": "transfuse.selection",
    "L1Selector": "transfuse.selection",
    "Recipe": "transfuse.recipe",
    "classification_metrics": "transfuse.evaluate",
    "make_model": "transfuse.pipeline",
    "save_model": "transfuse.pipeline",
    "load_model": "transfuse.pipeline",
    "part_kinds": "transfuse.parts",
    "load_source": "transfuse.data",
    "split_source": "transfuse.data",
    "fit": "transfuse.workflow",
    "fit_source": "transfuse.workflow",
    "FitRequest": "transfuse.workflow",
    "run_auto": "transfuse.auto.run",
    "AutoRequest": "transfuse.auto.run",
    "EnsembleModel": "transfuse.ensemble",
    "TransfuseError": "transfuse.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'transfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
