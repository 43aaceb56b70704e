"""Any scikit-learn classifier as a model's head, saved without pickle.

transfuse's own heads (:mod:`transfuse.heads`) store their coefficients as arrays. Another fitted
classifier (a random forest, gradient boosting, an SVC) is stored with skops' format, which
rebuilds objects from a description and loads only the types it is told to trust. Beyond skops'
own defaults, transfuse trusts scikit-learn estimator classes and a short list of the internal
classes scikit-learn's classifiers keep (trees, neighbour indexes, optimiser state) and nothing
else: never a function, whose call a crafted file could aim at anything. A classifier that needs
more (a class of your own, another library's booster) is refused when it is saved, with the
reason, so a model folder never holds something that will not load.
"""

from __future__ import annotations

import importlib

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if

from transfuse.errors import ModelDirError

SAFE_INTERNALS = frozenset({  # classes scikit-learn's classifiers hold; their constructors only store or compute
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
})
_INSTALL = "pip install skops"


def _skops():
    try:
        import skops.io as sio
    except ImportError:
        raise ModelDirError(f"saving a scikit-learn classifier that is not a transfuse head needs skops ({_INSTALL}); "
                            f"or use one of transfuse's heads: {_heads()}") from None
    return sio


def _heads() -> str:
    from transfuse.parts import part_kinds

    return ", ".join(sorted(k for k in part_kinds("head") if k != SklearnHead.kind))


def _trusted(name: str) -> bool:
    """A listed internal class, or a scikit-learn estimator class (resolved, so a function or any
    other object under a scikit-learn name is not trusted)."""
    if name in SAFE_INTERNALS:
        return True
    module, _, attr = name.rpartition(".")
    if not module.startswith("sklearn.") or attr.startswith("__"):
        return False
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, BaseEstimator)


def _untrusted(sio, data: bytes) -> list[str]:
    return [t for t in sio.get_untrusted_types(data=data) if not _trusted(t)]


class SklearnHead(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn classifier (``classes_``, ``predict``; ``predict_proba`` when it has one)
    as a part of kind ``sklearn`` (role ``head``). :func:`~transfuse.pipeline.save_model` wraps a
    pipeline's last step in it when that step is not a transfuse head.

    >>> from sklearn.ensemble import RandomForestClassifier  # doctest: +SKIP
    >>> save_model(make_pipeline(FeatureExtractor(), RandomForestClassifier()).fit(paths, labels), "m")  # doctest: +SKIP
    """

    kind = "sklearn"
    role = "head"
    by_name = False  # wraps a classifier you fitted: not a head make_head (or --head) builds

    def __init__(self, estimator) -> None:
        self.estimator = estimator

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.estimator, "classes_")

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def fit(self, X, y) -> SklearnHead:
        self.estimator.fit(X, y)
        return self

    def predict(self, X) -> np.ndarray:
        return self.estimator.predict(X)

    @available_if(lambda self: hasattr(self.estimator, "predict_proba"))
    def predict_proba(self, X) -> np.ndarray:
        return self.estimator.predict_proba(X)

    @available_if(lambda self: hasattr(self.estimator, "decision_function"))
    def decision_function(self, X) -> np.ndarray:
        return self.estimator.decision_function(X)

    # -- the part protocol ----------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The estimator in skops' format (bytes as a uint8 array); refused when it holds a type
        outside scikit-learn, NumPy and SciPy, since loading would have to trust it."""
        sio = _skops()
        name = f"{type(self.estimator).__module__}.{type(self.estimator).__qualname__}"
        if not hasattr(self.estimator, "classes_"):
            raise ModelDirError(f"{name} is not a fitted classifier (it has no classes_): fit it before saving, or use "
                                f"one of transfuse's heads: {_heads()}")
        try:
            data = sio.dumps(self.estimator)
        except Exception as exc:  # noqa: BLE001  (skops cannot describe every object)
            raise ModelDirError(f"{name} cannot be saved without pickle ({type(exc).__name__}: {str(exc)[:150]}); use "
                                f"one of transfuse's heads: {_heads()}") from None
        foreign = _untrusted(sio, data)
        if foreign:
            raise ModelDirError(f"{name} cannot be saved safely: loading it would have to trust "
                                f"{', '.join(foreign)}, which is neither a scikit-learn estimator nor one of the "
                                f"internal classes transfuse trusts; use a scikit-learn classifier or one of "
                                f"transfuse's heads: {_heads()}")
        meta = {"estimator": name, "classes": [c.item() if isinstance(c, np.generic) else c for c in self.classes_]}
        return {"skops": np.frombuffer(data, dtype=np.uint8).copy()}, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> SklearnHead:
        """Load with skops, trusting scikit-learn estimator classes and the listed internals only."""
        sio = _skops()
        data = bytes(np.asarray(arrays["skops"], dtype=np.uint8))
        foreign = _untrusted(sio, data)
        if foreign:
            raise ModelDirError(f"the saved {meta.get('estimator', 'head')} holds types that are not trusted "
                                f"({', '.join(foreign)}); it was not written by transfuse, so it is not loaded")
        return cls(sio.loads(data, trusted=sio.get_untrusted_types(data=data)))  # every one checked above


PARTS = (SklearnHead,)
