"""Feature extraction: all requested taps in one forward pass, batched, cached, resumable.

``extract_features`` asks :mod:`transfuse.engines` which engine runs the backbone (and for its
runner), keeps what the feature cache already holds, and extracts the rest batch by batch.
:class:`~transfuse.featurizers.extractor.FeatureExtractor` wraps it as a pipeline step.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transfuse.backbones import create_backbone, get_spec, resolve_weights
from transfuse.cache import FeatureCache, make_key
from transfuse.config import default_device
from transfuse.data.fingerprint import item_digest
from transfuse.engines import (
    COMPILE_MIN_ITEMS,
    Calibration,
    EngineStore,
    Plan,
    autocast,
    compile_pays,
    package_built,
    plan,
    runner,
)
from transfuse.engines.onnx_images import OnnxImages, serves
from transfuse.errors import CorruptInputError, DataError, OutOfTime
from transfuse.progress import progress as show_progress
from transfuse.taps import check_pooling, parse_layers

if TYPE_CHECKING:  # a built network: only extraction itself needs torch
    from transfuse.backbones.nets.base import Backbone

log = logging.getLogger(__name__)
FORMAT = "v1"  # bump when pooling or layout changes so old cache entries are not reused
_WHAT = {"image": "images", "audio": "audio", "sequence": "sequences"}
_UNITS = {"text": "text", "audio": "clip", "sequence": "seq"}  # of the progress bar (images: img)
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


def open_cache(cache: FeatureCache | bool | str | os.PathLike | None) -> FeatureCache | None:
    """``True`` -> the default cache, a path -> a cache there, ``False``/``None`` -> no cache."""
    if isinstance(cache, FeatureCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    return FeatureCache() if cache else None


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
    fp32, bf16) pick the engine (see :mod:`transfuse.engines`); the resolved pair is part of the cache key.

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
    pooling = check_pooling(pooling, spec.modality)
    if long_text not in ("truncate", "chunk"):
        raise DataError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}")
    weights_id = resolve_weights(spec, weights).identity
    taps = spec.check_taps(parse_layers(layers) or list(spec.default_taps))
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no inputs to extract features from")
    store = open_cache(cache)
    engine_files = EngineStore(store.root if store is not None else None)

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

    def job_for(engine: Plan) -> _Job:
        return _Job(spec.name, weights, weights_id, taps, pooling, preprocess, store, long_text, engine, device=device)

    def compile_worth(pr: str) -> bool:  # see engines.compile_pays; cheap answers first
        exists = package_built(engine_files, spec.name, weights_id, pr, device)
        if not exists and len(wanted) < COMPILE_MIN_ITEMS:
            return False
        others = [Plan("torch", pr)] + [Plan("onnx", pr)] * (pr == "fp32")  # what auto would run instead
        return compile_pays(job_for(Plan("compile", pr)).pending(wanted),
                            min(job_for(other).pending(wanted) for other in others), exists)

    calibration = Calibration(store=engine_files, name=spec.name, weights_id=weights_id, items=good_paths, taps=taps,
                              pooling=pooling, preprocess=f"{preprocess}|{FORMAT}", device=device,
                              backbone=lambda: _ready_backbone(spec.name, weights, weights_id, device, long_text))
    engine = plan(spec, runtime, precision, device, calibration, compile_worth=compile_worth)
    job = job_for(engine)
    if store is not None:
        for tap in taps:  # missing: not stored, or in a shard that vanished or changed (extracted again)
            job.needed[tap] = set(store.missing(job.keys[tap], wanted))
    else:
        job.needed = {tap: set(wanted) for tap in taps}
    missing = [d for d in wanted if any(d in job.needed[tap] for tap in taps)]
    n_cached = len(wanted) - len(missing)

    if missing:
        first_path = {d: p for p, d in zip(paths, digests)}
        failed_digests |= _run_extraction(job, [first_path[d] for d in missing], missing,
                                          batch_size, num_workers, device, progress)

    what = _WHAT.get(spec.modality, "images")
    bad = [i for i, d in enumerate(digests) if d in failed_digests]
    if bad and on_error == "raise":
        raise CorruptInputError.unreadable([paths[i] for i in bad], len(paths), what)
    bad_set = set(bad)
    good = [i for i in range(len(paths)) if i not in bad_set]
    if not good:
        raise CorruptInputError(f"none of the {len(paths)} files could be read as {what}", paths)
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
        """Keep the rows this tap still needs (in the cache, or in memory without one or with a
        read-only one)."""
        keep = [j for j, d in enumerate(digests) if d in self.needed[tap]]
        if not keep:
            return
        rows, kept = vecs[keep], [digests[j] for j in keep]
        if self.store is None or self.store.read_only:
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
        if self.memory[tap]:
            return len(next(iter(self.memory[tap].values())))
        return self.store.dim(self.keys[tap])

    def rows(self, tap: str, digests: list[str]) -> np.ndarray:
        """The rows of ``digests``: extracted now and kept in memory, or read from the cache."""
        fresh = self.memory[tap]
        stored = [i for i, d in enumerate(digests) if d not in fresh]
        if not stored:
            return np.stack([fresh[d] for d in digests])
        out = np.empty((len(digests), self.width(tap)), np.float32)
        out[stored] = self.store.get(self.keys[tap], [digests[i] for i in stored])
        for i, d in enumerate(digests):
            if d in fresh:
                out[i] = fresh[d]
        return out


DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("extraction_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None):
    """Extraction inside the block stops after the batch that passes ``at`` (``time.monotonic()``),
    keeping what it computed in the cache, and raises :class:`~transfuse.errors.OutOfTime` (``auto``
    gives its trials a deadline this way; nothing else does)."""
    token = DEADLINE.set(at)
    try:
        yield
    finally:
        DEADLINE.reset(token)


def _run_extraction(job: _Job, paths: list[str], digests: list[str], batch_size: int,
                    num_workers: int | None, device: str, progress: bool | None) -> set[str]:
    """Extract ``paths`` batch by batch, flushing to the cache every FLUSH_ROWS; return failed digests."""
    bb = _front_end(job, device)
    engine_runner = runner(job.engine, job.taps, bb.tap_names, device)
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

    bar = show_progress(len(paths), f"extract {job.backbone}", _UNITS.get(bb.modality, "img"), _show_progress(progress))
    start = time.perf_counter()
    with bar:
        stop_at, done = DEADLINE.get(), 0
        try:
            for inputs, idx, ok in batches:
                failed.update(_forward_batch(bb, job, inputs, [digests[int(i)] for i in idx], ok, device,
                                             pending, pending_digests, engine_runner))
                if len(pending_digests) >= FLUSH_ROWS:
                    flush()
                bar.update(len(idx))
                done += len(idx)
                if stop_at is not None and time.monotonic() > stop_at:
                    raise OutOfTime(f"{job.backbone}: the deadline came after {done} of {len(paths)} new items "
                                    f"(kept in the feature cache when one is used)")
        except (KeyboardInterrupt, OutOfTime):
            flush()  # keep what was computed: the next run resumes after it
            raise
        flush()
    job.forward_seconds = time.perf_counter() - start
    return failed


def _front_end(job: _Job, device: str):
    """What reads and embeds the items: the built backbone, or for images on an exported ONNX graph the
    image path that needs no torch network (:mod:`transfuse.engines.onnx_images`)."""
    spec = get_spec(job.backbone)
    if job.engine.runtime == "onnx" and serves(spec, job.taps, job.pooling):
        return OnnxImages(spec)
    return _ready_backbone(job.backbone, job.weights, job.weights_id, device, job.long_text)


def _ready_backbone(name: str, weights: str, weights_id: str, device: str, long_text: str) -> Backbone:
    bb = get_backbone(name, weights, weights_id, device)
    if bb.modality == "text":
        bb.long_text = long_text
    return bb


def _forward_batch(bb: Backbone, job: _Job, inputs, batch_digests: list[str], ok, device: str,
                   pending: dict[str, list[np.ndarray]], pending_digests: list[str], runner=None) -> list[str]:
    """One forward pass over the decodable items of a batch; pooled rows go to ``pending``.
    Returns the digests of the items that could not be decoded."""
    good = [j for j in range(len(batch_digests)) if bool(ok[j])]
    if good:
        with autocast(device, job.engine.precision):
            pooled = bb.embed(inputs, good, job.taps, job.pooling, device, runner=runner)
        for tap in job.taps:
            vecs = pooled[tap]
            vecs = (vecs if isinstance(vecs, np.ndarray) else vecs.float().cpu().numpy()).astype(np.float32)
            if not np.isfinite(vecs).all():
                hint = "check the weights file" if (job.engine.runtime, job.engine.precision) == ("torch", "fp32") else \
                    "try --runtime torch --precision fp32, and check the weights file"
                raise DataError(f"backbone {job.backbone} produced NaN/inf features at layer {tap} with "
                                f"{job.engine.runtime} {job.engine.precision}; {hint}")
            pending[tap].append(vecs)
        pending_digests.extend(batch_digests[j] for j in good)
    return [d for j, d in enumerate(batch_digests) if not bool(ok[j])]
