"""The first step of every probe pipeline: items in, features out.

Two kinds, one factory. A *pretrained* featurizer (:class:`FeatureExtractor`) runs backbones and
caches what they compute; a *fitted* one (``tfidf``) learns from the training split and is chosen
by the same ``--backbone`` flag. :func:`make_featurizer` is the only place that tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from transfuse.backbones import check_modality, default_backbone, get_spec
from transfuse.errors import DataError
from transfuse.featurizers.extractor import FeatureExtractor, backbone_list, layers_of, weights_ids
from transfuse.parts import part_kinds

__all__ = ["FeatureExtractor", "FeaturizerInfo", "backbone_list", "describe", "fitted_featurizers", "layers_of",
           "make_featurizer", "refuse_options", "weights_ids"]


def fitted_featurizers() -> dict[str, type]:
    """``{name: class}`` of the featurizers learned from the training split (``tfidf``, and any a
    plugin declares), chosen by ``--backbone NAME``."""
    return {kind: cls for kind, cls in part_kinds("featurizer").items() if getattr(cls, "fitted", False)}


@dataclass(frozen=True)
class FeaturizerInfo:
    """What the CLI and the workflow need to know of a ``--backbone`` name without building it."""

    name: str
    modality: str
    fitted: bool
    description: str
    trainable: bool  # can be fine-tuned
    network: str = ""  # what runs it (torch, onnx, numpy, keras); empty for fitted featurizers


def describe(name: str) -> FeaturizerInfo:
    """The modality and kind of a featurizer name (a backbone, or a fitted featurizer)."""
    fitted = fitted_featurizers()
    if name in fitted:
        cls = fitted[name]
        return FeaturizerInfo(name, cls.modality, True, getattr(cls, "description", ""), False)
    spec = get_spec(name)
    return FeaturizerInfo(name, spec.modality, False, spec.description,
                          spec.network in ("torch", "keras") and spec.modality != "audio", spec.network)


def check_trainable(name: str) -> None:
    """Raise a clear error when ``name`` cannot be fine-tuned (before any work)."""
    info = describe(name)
    if info.trainable:
        return
    if info.fitted:
        what = "fitted on the training texts, not a network"
    elif info.modality == "audio":
        what = "the audio encoders are frozen here"
    else:
        what = "a frozen encoder, not a torch network"
    raise DataError(f"{name} cannot be fine-tuned ({what}); use `transfuse fit` (pretrained features + a trained "
                    f"head), or another backbone")


def make_featurizer(backbone: str | None, modality: str, *, layers=None, pooling: str | None = None,
                    weights: str = "pretrained", runtime: str = "auto", precision: str = "auto", **settings):
    """The first pipeline step for ``backbone`` (comma-separated to fuse several; None: the
    modality's default) on data of ``modality``: a fresh fitted featurizer, or a
    :class:`FeatureExtractor` with ``layers``, ``pooling``, ``weights``, engine and run-time
    ``settings`` (``batch_size``, ``num_workers``, ``device``, ``cache``, ``long_text``, ``on_error``).
    Options that do not apply are clear errors.

    >>> make_featurizer("tfidf", "text")
    TfidfFeatures()
    """
    names = backbone_list(backbone or default_backbone(modality))
    fitted = fitted_featurizers()
    own = [n for n in names if n in fitted]
    if not own:
        check_modality(names, modality)
        return FeatureExtractor(backbone=backbone or names[0], layers=layers, pooling=pooling, weights=weights,
                                runtime=runtime, precision=precision, **settings)
    name = own[0]
    if len(names) > 1:
        raise DataError(f"{name} is fitted on the training data and cannot be fused with other backbones; "
                        f"fit it on its own with --backbone {name}")
    cls = fitted[name]
    if cls.modality != modality:
        raise DataError(f"{name} reads {cls.modality} but the data is {modality}; use --backbone "
                        f"{default_backbone(modality)} or another {modality} backbone (see `transfuse backbones`)")
    given = [flag for flag, value in (("--layers", layers), ("--pooling", pooling),
                                      ("--runtime", None if runtime == "auto" else runtime),
                                      ("--precision", None if precision == "auto" else precision)) if value]
    if weights != "pretrained":
        given.append("--weights")
    refuse_options(name, given)
    return cls()


def refuse_options(name: str, given: list[str]) -> None:
    """The one error for options a fitted featurizer cannot take (its columns are not layers)."""
    if given:
        raise DataError(f"{name} has no layers, pooling, weights or engine to choose: drop {', '.join(given)} "
                        f"(set the head's C with --head-param C=...)")
