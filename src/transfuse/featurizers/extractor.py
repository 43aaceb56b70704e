"""The pretrained featurizer: a :class:`FeatureExtractor` runs one or several backbones over the
items (through :func:`~transfuse.extract.extract_features` and its cache) and returns their
pooled taps side by side."""

from __future__ import annotations

import logging
import os
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from transfuse.backbones import get_spec, resolve_weights
from transfuse.config import default_device
from transfuse.data.inmemory import item_files
from transfuse.engines import PRECISIONS, RUNTIMES, EngineStore, package_built
from transfuse.engines import validate as validate_engine
from transfuse.errors import DataError, EngineError, ModelDirError, TransfuseError, UnknownBackboneError
from transfuse.extract import Features, extract_features, open_cache
from transfuse.taps import AUDIO_POOLINGS, POOLINGS, SEQUENCE_POOLINGS, parse_layers

log = logging.getLogger(__name__)
_SAVED_PARAMS = ("backbone", "layers", "pooling", "weights", "batch_size", "long_text", "runtime", "precision")


def backbone_list(backbone: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``: several backbones are fused by extracting each in turn."""
    names = [b.strip() for b in backbone.split(",") if b.strip()]
    if not names:
        raise DataError("no backbone given")
    return list(dict.fromkeys(names))


def layers_of(backbone: str, layers: str | list[str] | None, backbones: list[str]) -> list[str] | None:
    """The layers one of several backbones extracts: ``"<backbone>:<layer>"`` entries go to that
    backbone only, plain names to every backbone.

    >>> layers_of("a", "a:blocks.4,features,b:stem", ["a", "b"])
    ['blocks.4', 'features']
    """
    wanted = parse_layers(layers)
    if wanted is None or len(backbones) == 1:
        return wanted
    mine = []
    for entry in wanted:
        owner, sep, tap = entry.rpartition(":")
        if sep and owner in backbones:
            if owner == backbone:
                mine.append(tap)
        else:
            mine.append(entry)
    return mine or None


def weights_ids(backbone: str, weights: str) -> str:
    """Weights identity of one backbone, or ``a=id_a;b=id_b`` for several."""
    names = backbone_list(backbone)
    if len(names) == 1:
        return resolve_weights(get_spec(names[0]), weights).identity
    return ";".join(f"{n}={resolve_weights(get_spec(n), weights).identity}" for n in names)


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """sklearn transformer: items (image or audio paths, texts) in, pooled backbone features
    (float32, 2-D) out.

    After ``fit`` (or ``transform``), ``slices_`` maps each layer to its columns and
    ``get_feature_names_out()`` names them ``"<layer>:<index>"``. Saved as a part of kind
    ``extractor``: its parameters, the engines its features were computed with, the column layout
    and the backbone weights' identity (a model refuses to predict with other weights).

    >>> from sklearn.pipeline import make_pipeline  # doctest: +SKIP
    >>> from transfuse.heads import LogisticHead  # doctest: +SKIP
    >>> model = make_pipeline(FeatureExtractor(layers="blocks.5,features"), LogisticHead())  # doctest: +SKIP
    >>> model.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
    """

    kind = "extractor"
    role = "featurizer"
    fitted = False  # a pretrained network: nothing learned from the data
    _parameter_constraints: dict = {  # checked in fit and when a saved model is loaded
        "backbone": [str], "layers": [str, list, None], "pooling": [StrOptions(set(POOLINGS + AUDIO_POOLINGS + SEQUENCE_POOLINGS)), None],
        "weights": [str, os.PathLike], "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None], "device": [str, None],
        "cache": "no_validation", "on_error": [StrOptions({"raise", "skip"})],
        "long_text": [StrOptions({"truncate", "chunk"})], "runtime": [StrOptions(set(RUNTIMES))],
        "precision": [StrOptions(set(PRECISIONS))], "engines": [dict, None],
    }

    def __init__(self, backbone: str = "efficientnet_lite0", layers: str | list[str] | None = None,
                 pooling: str | None = None, weights: str = "pretrained", batch_size: int | None = None,
                 num_workers: int | None = None, device: str | None = None,
                 cache: bool | str = True, on_error: str = "raise", long_text: str = "truncate",
                 runtime: str = "auto", precision: str = "auto", engines: dict[str, str] | None = None) -> None:
        self.backbone = backbone
        self.layers = layers
        self.pooling = pooling
        self.weights = weights
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.cache = cache
        self.on_error = on_error
        self.long_text = long_text
        self.runtime = runtime
        self.precision = precision
        self.engines = engines

    @property
    def modality(self) -> str:
        """What it reads: "image", "text" or "audio" (its first backbone's modality)."""
        return get_spec(backbone_list(self.backbone)[0]).modality

    # -- the part protocol ----------------------------------------------------------------------
    def get_state(self) -> tuple[dict, dict]:
        """No arrays; its parameters (the engines it ran, not the ``auto`` request; a weights file by
        its absolute path) and the column layout and weights identity it was fitted with."""
        check_is_fitted(self, "slices_")
        params = {k: getattr(self, k) for k in _SAVED_PARAMS}
        if params["weights"] not in ("pretrained", "random"):
            params["weights"] = str(Path(params["weights"]).resolve())
        params["engines"] = getattr(self, "engines_", None) or self.engines
        fitted = {"layers": list(self.layers_), "slices": {k: [s.start, s.stop] for k, s in self.slices_.items()},
                  "weights_id": weights_ids(self.backbone, params["weights"])}
        return {}, {"params": params, "fitted": fitted}

    @classmethod
    def from_state(cls, arrays: dict, meta: dict) -> FeatureExtractor:
        """The extractor a model was trained with. The backbone weights are checked against the ones it
        was trained on by :meth:`configure` (which loading calls: a moved weights file can be named
        there) and before the first extraction."""
        extractor = cls(**meta["params"])
        extractor._check_params()
        engines = extractor.engines or {}
        if not all(isinstance(e, str) and len(e.split()) == 2 for e in engines.values()):
            raise ValueError(f"engines must name a runtime and a precision per backbone, got {engines}")
        fitted = meta["fitted"]
        extractor.trained_weights_id_ = fitted.get("weights_id")
        extractor._remember(list(fitted["layers"]), {k: slice(a, b) for k, (a, b) in fitted["slices"].items()})
        return extractor

    def configure(self, **settings) -> FeatureExtractor:
        """Change run-time settings (``device``, ``num_workers``, ``batch_size``, ``cache``, ``on_error``,
        or ``weights``: where the same weights file lives now), never what the features are; asking for
        another ``runtime``/``precision`` unpins the engines the model was trained with (any engine's
        features agree with fp32 to a cosine of 0.99). A loaded model's weights are checked here."""
        if {"runtime", "precision"} & set(settings):
            settings = {"engines": None, **settings}
        self.set_params(**settings)
        self._check_weights()
        return self

    def _check_weights(self) -> None:
        """Refuse to compute features with backbone weights other than those the model was trained on."""
        saved = getattr(self, "trained_weights_id_", None)
        if saved is None or getattr(self, "_weights_checked", None) == (self.backbone, self.weights):
            return  # nothing to check, or checked already (a weights file is hashed once, not per batch of items)
        try:
            current = weights_ids(self.backbone, self.weights)
        except UnknownBackboneError as exc:
            raise ModelDirError(f"the model's backbone is not known here ({exc}); install the plugin that provides "
                                f"it, or upgrade transfuse") from None
        except TransfuseError as exc:
            raise ModelDirError(f"the backbone weights this model was trained with are not available ({exc}); if "
                                f"the weights file moved, pass its new path (weights=...)") from None
        if current != saved:
            raise ModelDirError(f"the model was trained on backbone weights {saved}, but {current} is installed now; "
                                f"install the matching weights or fit again")
        self._weights_checked = (self.backbone, self.weights)

    def _engine_for(self, name: str, device: str) -> tuple[str, str]:
        """The engine of one backbone: pinned in ``engines`` (a saved model keeps the one it was
        trained with) when it can run here (else ``auto``), or the ``runtime``/``precision`` request.
        A pinned compiled engine is used where its package is already built; elsewhere the same
        precision runs eagerly rather than compiling for a few predictions."""
        pinned = (self.engines or {}).get(name)
        if pinned:
            rt, pr = pinned.split()
            try:
                validate_engine(get_spec(name), rt, pr, device)
                if rt == "compile" and not self._package_built(name, pr, device):
                    log.info("%s was trained on compiled features; this machine has no compiled package yet, so "
                             "they are computed eagerly in %s (checked to agree with it)", name, pr)
                    return "torch", pr
                return rt, pr
            except DataError as exc:
                log.warning("%s features were computed with %s when this model was trained, which cannot run "
                            "here (%s); choosing another engine (its features agree to a cosine of 0.99 or more)",
                            name, pinned, exc)
                return "auto", "auto"
        return self.runtime, self.precision

    def _package_built(self, name: str, precision: str, device: str) -> bool:
        store = open_cache(self.cache)
        return package_built(EngineStore(store.root if store else None), name, weights_ids(name, self.weights),
                             precision, device)

    def _extract(self, X) -> Features:
        """Features of every backbone in ``backbone`` (comma-separated), side by side; with several
        backbones each block is named ``<backbone>:<layer>``. Items may be in memory (see
        :mod:`transfuse.data.inmemory`)."""
        with item_files(X, self.modality) as paths:
            return self._extract_paths(paths)

    def _extract_paths(self, paths: list[str]) -> Features:
        self._check_weights()
        names = backbone_list(self.backbone)
        device = self.device or default_device()
        engines = {name: self._engine_for(name, device) for name in names}
        for name in names:  # every backbone can run as asked, before the first one spends its time
            validate_engine(get_spec(name), *engines[name], device)
        parts = [self._extract_one(paths, name, names, *engines[name]) for name in names]
        self.engines_ = {name: f"{part.engine.runtime} {part.engine.precision}" for name, part in zip(names, parts)}
        self.engine_notes_ = {name: part.engine.label() for name, part in zip(names, parts)}
        if len(parts) == 1:
            return parts[0]
        slices, col = {}, 0
        for name, part in zip(names, parts):
            for tap, s in part.slices.items():
                slices[f"{name}:{tap}"] = slice(col + s.start, col + s.stop)
            col += part.X.shape[1]
        X_all = np.concatenate([p.X for p in parts], axis=1)
        failed = sorted(set().union(*(p.failed for p in parts)))
        return Features(X=X_all, slices=slices, items=paths, failed=failed,
                        n_extracted=sum(p.n_extracted for p in parts), n_cached=sum(p.n_cached for p in parts),
                        seconds=sum(p.seconds for p in parts))

    def _extract_one(self, paths: list[str], name: str, names: list[str], runtime: str, precision: str) -> Features:
        def run(rt: str, pr: str) -> Features:
            return extract_features(paths, backbone=name, layers=layers_of(name, self.layers, names),
                                    pooling=self.pooling, weights=self.weights, cache=self.cache,
                                    batch_size=self.batch_size, num_workers=self.num_workers, device=self.device,
                                    on_error=self.on_error, long_text=self.long_text, runtime=rt, precision=pr)
        try:
            return run(runtime, precision)
        except EngineError as exc:
            if not (self.engines or {}).get(name):
                raise
            log.warning("%s: the engine this model was trained with could not be built here (%s); choosing another "
                        "(its features agree to a cosine of 0.99 or more)", name, exc)
            return run("auto", "auto")

    def _check_params(self) -> None:
        """The parameters against ``_parameter_constraints``; a bad one is a DataError naming it."""
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise DataError(str(exc)) from None

    def _check_pooling(self) -> None:
        """``cls`` takes a transformer's class token; a convolutional map has none (it would be an
        average under another name and another cache key). Checked when fitting, not when a saved
        extractor predicts: models saved before the check keep predicting as they did."""
        if self.pooling != "cls":
            return
        names = backbone_list(self.backbone)
        for name in names:
            spec = get_spec(name)
            shapes = {tap.name: tap.shape for tap in spec.taps}
            taps = layers_of(name, self.layers, names) or spec.default_taps
            maps = [tap for tap in taps if len(shapes.get(tap, ())) == 3]
            if maps:
                raise DataError(f"pooling 'cls' takes the class token of a transformer's token sequence, but {name} "
                                f"layer {', '.join(maps)} is not one ({'x'.join(map(str, shapes[maps[0]]))}); use avg, "
                                f"max, gem or avgmax")

    def _remember(self, layers: list[str], slices: dict[str, slice]) -> None:
        self.layers_ = list(layers)
        self.slices_ = dict(slices)
        self.n_features_out_ = max((s.stop for s in self.slices_.values()), default=0)
        self.feature_names_out_ = np.asarray(
            [f"{tap}:{i}" for tap, s in self.slices_.items() for i in range(s.stop - s.start)], dtype=object)

    def fit(self, X, y=None) -> FeatureExtractor:
        """Extract (and cache) features of ``X`` and record the column layout."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        self._check_params()
        self._check_pooling()
        feats = self._extract(X)
        self._remember(list(feats.slices), feats.slices)
        return feats.X

    def transform(self, X) -> np.ndarray:
        """Features of ``X`` (paths or texts), shape ``(n_items, n_features_out_)``."""
        feats = self._extract(X)
        if not hasattr(self, "slices_"):
            self._remember(list(feats.slices), feats.slices)
        return feats.X

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_


PARTS = (FeatureExtractor,)
