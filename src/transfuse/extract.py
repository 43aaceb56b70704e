"""Feature extraction: all requested taps in one forward pass, batched, cached, resumable.

``extract_features`` is the engine; :class:`FeatureExtractor` wraps it as an sklearn
transformer (paths in, 2-D float32 features out) so it composes with heads in a Pipeline.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from tqdm.auto import tqdm

from transfuse.backbones import Backbone, create_backbone, get_spec
from transfuse.cache import FeatureCache, make_key
from transfuse.config import default_device
from transfuse.data.fingerprint import item_digest
from transfuse.errors import CorruptInputError, DataError, EngineError
from transfuse.runtime import (CALIBRATION_ITEMS, COMPILE_MIN_ITEMS, Plan, artifact_opens, artifact_path, autocast,
                               compile_id, compile_pays, engine_runner, load_checks, measure_engine, save_check)
from transfuse.runtime import check_key as runtime_check_key
from transfuse.runtime import plan as runtime_plan
from transfuse.runtime import validate as validate_engine
from transfuse.taps import check_pooling, parse_layers

log = logging.getLogger(__name__)
FORMAT = "v1"  # bump when pooling or layout changes so old cache entries are not reused
_WHAT = {"image": "images", "audio": "audio"}
FLUSH_ROWS = 256  # pooled rows buffered per tap before one shard is written to the cache


@dataclass
class Features:
    """Extracted features with their layout.

    ``X[:, slices[tap]]`` are the columns of one tap. Rows of items that could not be
    decoded (``failed``) are NaN.
    """

    X: np.ndarray
    slices: dict[str, slice]
    items: list[str]
    failed: list[int] = field(default_factory=list)
    n_extracted: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    engine: Plan | None = None  # the runtime and precision that computed (or would compute) them

    @property
    def feature_names(self) -> list[str]:
        return [f"{tap}:{i}" for tap, s in self.slices.items() for i in range(s.stop - s.start)]


_BACKBONES: OrderedDict[tuple[str, str, str], Backbone] = OrderedDict()


def get_backbone(name: str, weights: str, weights_id: str, device: str) -> Backbone:
    """Build (or reuse from a small in-process cache) a backbone on ``device``; reuse is keyed by
    the weights identity, so an overwritten weights file is loaded again."""
    key = (name, weights_id, device)
    if key not in _BACKBONES:
        backbone = create_backbone(name, weights=weights)
        backbone.prepare(device)
        _BACKBONES[key] = backbone
        while len(_BACKBONES) > 2:
            _BACKBONES.popitem(last=False)
    return _BACKBONES[key]


def _show_progress(progress: bool | None) -> bool:
    return log.getEffectiveLevel() <= logging.INFO if progress is None else progress


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


def open_cache(cache: FeatureCache | bool | str | os.PathLike | None) -> FeatureCache | None:
    """``True`` -> the default cache, a path -> a cache there, ``False``/``None`` -> no cache."""
    if isinstance(cache, FeatureCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    return FeatureCache() if cache else None


def compiled_package_exists(backbone: str, weights_id: str, precision: str, device: str,
                            store: FeatureCache | None) -> bool:
    """Whether this machine already has the compiled package of a backbone in a precision."""
    root = store.root if store is not None else None
    path = artifact_path(root, ("compile", precision), "", compile_id(backbone, weights_id, device), create=False)
    return path is not None and path.is_file()


def unreadable_error(bad_paths: list[str], total: int, what: str = "images") -> CorruptInputError:
    """The one message for inputs that could not be decoded."""
    listing = ", ".join(bad_paths[:5]) + (" ..." if len(bad_paths) > 5 else "")
    return CorruptInputError(
        f"{len(bad_paths)} of {total} files could not be read as {what}: {listing}; fix or remove them, "
        f"or pass --skip-bad (on_error='skip' in Python) to leave them out; features of the others are cached",
        bad_paths,
    )


def extract_features(
    paths: list[str],
    backbone: str = "efficientnet_lite0",
    layers: str | list[str] | None = None,
    pooling: str | None = None,
    weights: str = "pretrained",
    cache: FeatureCache | bool | str | os.PathLike = True,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | None = None,
    on_error: str = "raise",
    progress: bool | None = None,
    long_text: str = "truncate",
    runtime: str = "auto",
    precision: str = "auto",
) -> Features:
    """Features of every image in ``paths`` for each requested tap, concatenated.

    Items whose features are cached (same bytes, backbone, weights, preprocessing, tap and
    pooling) are not recomputed; new ones are extracted in one forward pass per batch and
    written to the cache every few hundred items, so a killed run resumes where it stopped.
    ``on_error="skip"`` returns undecodable items as NaN rows listed in ``failed``;
    ``"raise"`` extracts everything else, then raises :class:`CorruptInputError`.
    Items are image paths, texts or audio paths as the backbone's ``modality`` says; texts
    longer than a text encoder's window are truncated or (``long_text="chunk"``) read in windows
    whose features are averaged. ``runtime`` (auto, torch, compile, onnx) and ``precision`` (auto,
    fp32, bf16) pick the engine (see :mod:`transfuse.runtime`); the resolved pair is part of the cache key.

    >>> f = extract_features(["a.png", "b.png"], layers="blocks.4,features")  # doctest: +SKIP
    >>> f.X.shape, f.slices["features"]  # doctest: +SKIP
    ((2, 1392), slice(112, 1392, None))
    """
    start = time.perf_counter()
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    device = device or default_device()
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    spec = get_spec(backbone)
    if spec.fitted:
        spec.build(weights)  # raises: learned from training data, it has no per-item features to cache
    pooling = check_pooling(pooling, spec.modality)
    if long_text not in ("truncate", "chunk"):
        raise DataError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}")
    weights_id = spec.weights_identity(weights)
    taps = parse_layers(layers) or ["features"]
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no inputs to extract features from")
    store = open_cache(cache)

    failed_digests: set[str] = set()
    digests: list[str] = []
    for i, p in enumerate(paths):
        try:
            digests.append(item_digest(p, spec.modality))
        except DataError as exc:
            if on_error == "raise":
                raise CorruptInputError(f"{exc}", [p]) from None
            digests.append(f"unreadable:{i}")
            failed_digests.add(digests[-1])

    preprocess = spec.input_spec.identity()
    if spec.modality == "text" and long_text != "truncate":
        preprocess += f"|long_text={long_text}"
    good_paths = [p for p, d in zip(paths, digests) if d not in failed_digests]
    wanted = [d for d in dict.fromkeys(digests) if d not in failed_digests]

    def job_for(plan: Plan) -> _Job:
        return _Job(spec.name, weights, weights_id, taps, pooling, preprocess, store, long_text, plan, device=device)

    def compile_worth(pr: str) -> bool:  # see runtime.compile_pays; cheap answers first
        exists = compiled_package_exists(spec.name, weights_id, pr, device, store)
        if not exists and len(wanted) < COMPILE_MIN_ITEMS:
            return False
        others = [Plan("torch", pr)] + [Plan("onnx", pr)] * (pr == "fp32")  # what auto would run instead
        return compile_pays(job_for(Plan("compile", pr)).pending(wanted),
                            min(job_for(other).pending(wanted) for other in others), exists)

    engine = runtime_plan(spec, runtime, precision, device, lambda candidates, retry=False: _calibrate(
        spec.name, weights, weights_id, taps, pooling, preprocess, long_text, device, store, good_paths, candidates,
        retry), compile_worth=compile_worth)
    job = job_for(engine)
    if store is not None:
        for tap in taps:
            store.verify(job.keys[tap])
            job.needed[tap] = set(store.missing(job.keys[tap], wanted))
    else:
        job.needed = {tap: set(wanted) for tap in taps}
    missing = [d for d in wanted if any(d in job.needed[tap] for tap in taps)]
    n_cached = len(wanted) - len(missing)

    if missing:
        first_path = {d: p for p, d in zip(paths, digests)}
        failed_digests |= _run_extraction(job, [first_path[d] for d in missing], missing,
                                          batch_size, num_workers, device, progress)

    bad = [i for i, d in enumerate(digests) if d in failed_digests]
    if bad and on_error == "raise":
        raise unreadable_error([paths[i] for i in bad], len(paths), _WHAT.get(spec.modality, "images"))
    bad_set = set(bad)
    good = [i for i in range(len(paths)) if i not in bad_set]
    if not good:
        raise CorruptInputError(f"none of the {len(paths)} files could be read as "
                                f"{_WHAT.get(spec.modality, 'images')}", paths)
    good_digests = [digests[i] for i in good]
    slices: dict[str, slice] = {}
    widths = {tap: job.width(tap) for tap in taps}
    col = 0
    for tap in taps:
        slices[tap] = slice(col, col + widths[tap])
        col += widths[tap]
    X = np.full((len(paths), col), np.nan, dtype=np.float32) if bad else np.empty((len(paths), col), np.float32)
    for tap in taps:  # filled in place one tap at a time, so peak memory stays near the output size
        part = job.rows(tap, good_digests)
        if part.shape[1] != widths[tap]:
            raise DataError(f"cached features of layer {tap} have width {part.shape[1]}, expected "
                            f"{widths[tap]}; run `transfuse cache prune --backbone {spec.name}`")
        X[good if bad else slice(None), slices[tap]] = part
        del part
    feats = Features(X=X, slices=slices, items=paths, failed=bad, n_extracted=len(missing),
                     n_cached=n_cached, seconds=time.perf_counter() - start, engine=engine)
    speed = f" at {len(missing) / job.forward_seconds:.1f}/s" if missing and job.forward_seconds else ""
    log.info("features: %d items, %d extracted (%s), %d from cache, %d failed, %d columns (%.1fs)",
             len(paths), len(missing), engine.label(speed), n_cached, len(bad), X.shape[1], feats.seconds)
    return feats


@dataclass
class _Job:
    """What one extraction call writes: a cache key per tap, and which items each tap still needs."""

    backbone: str
    weights: str
    weights_id: str
    taps: list[str]
    pooling: str
    preprocess: str
    store: FeatureCache | None
    long_text: str = "truncate"
    engine: Plan = field(default_factory=lambda: Plan("torch", "fp32"))
    device: str = "cpu"
    needed: dict[str, set[str]] = field(default_factory=dict)
    memory: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    forward_seconds: float = 0.0  # time from the first batch to the last one written

    def __post_init__(self) -> None:
        engine = {}  # eager fp32 (and a frozen encoder's own way) keep the keys they had before engines existed
        if (self.engine.runtime, self.engine.precision) not in (("torch", "fp32"), ("native", "fp32")):
            engine = {"runtime": self.engine.runtime, "precision": self.engine.precision}
            if self.engine.precision == "bf16" or self.engine.runtime == "compile":  # CPU and GPU kernels differ
                engine["device"] = "cuda" if self.device.startswith("cuda") else "cpu"
        self.keys = {tap: make_key(format=FORMAT, backbone=self.backbone, weights=self.weights_id,
                                   preprocess=self.preprocess, tap=tap, pooling=self.pooling, **engine)
                     for tap in self.taps}
        self.memory = {tap: {} for tap in self.taps}

    def save(self, tap: str, digests: list[str], vecs: np.ndarray) -> None:
        """Keep the rows this tap still needs (in the cache, or in memory without one)."""
        keep = [j for j, d in enumerate(digests) if d in self.needed[tap]]
        if not keep:
            return
        rows, kept = vecs[keep], [digests[j] for j in keep]
        if self.store is None:
            self.memory[tap].update(zip(kept, rows))
            return
        self.store.put(self.keys[tap], kept, rows, {
            "backbone": self.backbone, "weights": self.weights_id, "tap": tap, "pooling": self.pooling,
            "meta": {"preprocess": self.preprocess, "format": FORMAT, "runtime": self.engine.runtime,
                     "precision": self.engine.precision}})

    def pending(self, digests: list[str]) -> int:
        """How many of ``digests`` this job would extract (missing from the cache under its keys)."""
        if self.store is None:
            return len(digests)
        missing: set[str] = set()
        for tap in self.taps:
            missing.update(self.store.missing(self.keys[tap], digests))
        return len(missing)

    def width(self, tap: str) -> int:
        if self.store is None:
            return len(next(iter(self.memory[tap].values())))
        return self.store.dim(self.keys[tap])

    def rows(self, tap: str, digests: list[str]) -> np.ndarray:
        if self.store is None:
            return np.stack([self.memory[tap][d] for d in digests])
        return self.store.get(self.keys[tap], digests)


def _run_extraction(job: _Job, paths: list[str], digests: list[str], batch_size: int,
                    num_workers: int | None, device: str, progress: bool | None) -> set[str]:
    """Extract ``paths`` batch by batch, flushing to the cache every FLUSH_ROWS; return failed digests."""
    bb = _ready_backbone(job.backbone, job.weights, job.weights_id, device, job.taps, job.long_text)
    runner = engine_runner(job.engine.runtime, job.engine.file, job.taps, bb.tap_names, device)
    batches = bb.batches(paths, batch_size or bb.default_batch_size(device), num_workers, device)
    failed: set[str] = set()
    pending: dict[str, list[np.ndarray]] = {tap: [] for tap in job.taps}
    pending_digests: list[str] = []

    def flush() -> None:
        for tap in job.taps:
            if pending[tap]:
                job.save(tap, pending_digests, np.concatenate(pending[tap]))
                pending[tap].clear()
        pending_digests.clear()

    bar = tqdm(total=len(paths), desc=f"extract {job.backbone}", unit={"text": "text", "audio": "clip"}.get(bb.modality, "img"),
                 disable=not _show_progress(progress))
    start = time.perf_counter()
    with bar:
        try:
            for inputs, idx, ok in batches:
                failed.update(_forward_batch(bb, job, inputs, [digests[int(i)] for i in idx], ok, device,
                                             pending, pending_digests, runner))
                if len(pending_digests) >= FLUSH_ROWS:
                    flush()
                bar.update(len(idx))
        except KeyboardInterrupt:
            flush()  # keep what was computed: the next run resumes after it
            raise
        flush()
    job.forward_seconds = time.perf_counter() - start
    return failed


def _ready_backbone(name: str, weights: str, weights_id: str, device: str, taps: list[str], long_text: str) -> Backbone:
    bb = get_backbone(name, weights, weights_id, device)
    bb.check_taps(taps)
    if bb.modality == "text":
        bb.long_text = long_text
    return bb


def _calibrate(backbone: str, weights: str, weights_id: str, taps: list[str], pooling: str, preprocess: str,
               long_text: str, device: str, store: FeatureCache | None, paths: list[str],
               candidates: list[tuple[str, str]], retry: bool = False) -> dict[tuple[str, str], tuple]:
    """Agreement with eager fp32 of each candidate engine on the first readable items, as
    ``{candidate: (cosine or None, graph or package file or None, error or None)}``; remembered in
    the cache folder, so it runs once per backbone, taps, pooling, kind of device and library
    versions. A remembered failed build is tried again only with ``retry`` (an explicit request)."""
    root = store.root if store is not None else None
    key = runtime_check_key(backbone, weights_id, taps, pooling, f"{preprocess}|{FORMAT}", device)
    record = dict(load_checks(root).get(key, {}))
    name = {c: f"{c[0]}-{c[1]}" for c in candidates}
    too_few = record.get("items", 0) < min(CALIBRATION_ITEMS, len(paths))
    package = functools.cache(lambda: compile_id(backbone, weights_id, device))

    def stale(c: tuple[str, str]) -> bool:  # a failure to retry, or a built engine that is gone or not ours
        entry = record[name[c]]
        if entry.get("cosine") is None:
            return retry
        if not entry.get("file"):
            return False
        if c[0] == "compile" and entry["file"] != str(artifact_path(root, c, key, package())):
            return True  # a package of another machine or version, found through a shared cache folder
        return not artifact_opens(c[0], entry["file"], taps, entry.get("outputs"), device)

    todo = [c for c in candidates if too_few or name[c] not in record or stale(c)]
    if todo and paths:
        bb = _ready_backbone(backbone, weights, weights_id, device, taps, long_text)
        inputs, good = None, []
        for inputs, _, ok in bb.batches(paths[:4 * CALIBRATION_ITEMS], CALIBRATION_ITEMS, 0, device):
            good = [j for j in range(len(ok)) if bool(ok[j])]
            if good:
                break
        if good:
            reference = bb.embed(inputs, good, taps, pooling, device)
            for candidate in todo:
                record[name[candidate]] = measure_engine(bb, candidate, inputs, good, reference, taps, pooling, device,
                                                         artifact_path(root, candidate, key, package()))
            record["items"] = len(good)
            save_check(root, key, record)
            log.info("runtime check for %s on %d items: %s", backbone, len(good), ", ".join(
                f"{n} cos {v['cosine']:.5f}" if v.get("cosine") is not None else f"{n} failed ({v.get('error')})"
                for n, v in record.items() if isinstance(v, dict)))
    return {c: (record[name[c]].get("cosine"), record[name[c]].get("file"), record[name[c]].get("error"))
            for c in candidates if name[c] in record}


def _forward_batch(bb: Backbone, job: _Job, inputs, batch_digests: list[str], ok, device: str,
                   pending: dict[str, list[np.ndarray]], pending_digests: list[str], runner=None) -> list[str]:
    """One forward pass over the decodable items of a batch; pooled rows go to ``pending``.
    Returns the digests of the items that could not be decoded."""
    good = [j for j in range(len(batch_digests)) if bool(ok[j])]
    if good:
        with autocast(device, job.engine.precision):
            pooled = bb.embed(inputs, good, job.taps, job.pooling, device, runner=runner)
        for tap in job.taps:
            vecs = pooled[tap].float().cpu().numpy().astype(np.float32)
            if not np.isfinite(vecs).all():
                hint = "check the weights file" if (job.engine.runtime, job.engine.precision) == ("torch", "fp32") else \
                    "try --runtime torch --precision fp32, and check the weights file"
                raise DataError(f"backbone {job.backbone} produced NaN/inf features at layer {tap} with "
                                f"{job.engine.runtime} {job.engine.precision}; {hint}")
            pending[tap].append(vecs)
        pending_digests.extend(batch_digests[j] for j in good)
    return [d for j, d in enumerate(batch_digests) if not bool(ok[j])]


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """sklearn transformer: image paths in, pooled backbone features (float32, 2-D) out.

    After ``fit`` (or ``transform``), ``slices_`` maps each layer to its columns and
    ``get_feature_names_out()`` names them ``"<layer>:<index>"``.

    >>> from sklearn.pipeline import make_pipeline  # doctest: +SKIP
    >>> from transfuse.heads import LogisticHead  # doctest: +SKIP
    >>> model = make_pipeline(FeatureExtractor(layers="blocks.5,features"), LogisticHead())  # doctest: +SKIP
    >>> model.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
    """

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
                if rt == "compile" and not compiled_package_exists(
                        name, get_spec(name).weights_identity(self.weights), pr, device, open_cache(self.cache)):
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

    def _extract(self, X) -> Features:
        """Features of every backbone in ``backbone`` (comma-separated), side by side; with several
        backbones each block is named ``<backbone>:<layer>``."""
        paths = [str(p) for p in np.asarray(X, dtype=object).ravel()]
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

    def _remember(self, feats: Features) -> None:
        self.layers_ = list(feats.slices)
        self.slices_ = dict(feats.slices)
        self.n_features_out_ = feats.X.shape[1]
        self.feature_names_out_ = np.asarray(feats.feature_names, dtype=object)

    def fit(self, X, y=None) -> "FeatureExtractor":
        """Extract (and cache) features of ``X`` and record the column layout."""
        self._remember(self._extract(X))
        return self

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        feats = self._extract(X)
        self._remember(feats)
        return feats.X

    def transform(self, X) -> np.ndarray:
        """Features of ``X`` (paths), shape ``(n_items, n_features_out_)``."""
        feats = self._extract(X)
        if not hasattr(self, "slices_"):
            self._remember(feats)
        return feats.X

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return self.feature_names_out_
