"""What one extraction writes, and the per-batch work every extraction path runs.

:class:`Job` holds the cache key of each tap and which items each tap still needs.
:func:`embed_batch` is the one per-batch function: the local loop
(:mod:`transfuse.extract.local`) and the Ray actors (:mod:`transfuse.extract.on_ray`) both call
it, so features computed on a cluster are those of one machine, bit for bit, for the same engine.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from transfuse.backbones import create_backbone, get_spec
from transfuse.cache import FeatureCache, make_key
from transfuse.engines import Plan, autocast
from transfuse.engines.onnx_images import OnnxImages, serves
from transfuse.errors import DataError

if TYPE_CHECKING:  # a built network: only extraction itself needs torch
    from transfuse.backbones.nets.base import Backbone

log = logging.getLogger("transfuse.extract")
FORMAT = "v1"  # bump when pooling or layout changes so old cache entries are not reused


@dataclass
class Job:
    """What one extraction call writes: a cache key per tap, and which items each tap still needs.

    Everything but ``store``, ``needed`` and ``memory`` is plain data, so a job travels to Ray
    actors as it is (:meth:`recipe`)."""

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

    def recipe(self) -> dict:
        """The job without its cache and bookkeeping: what a remote worker needs to compute its rows."""
        return {"backbone": self.backbone, "weights": self.weights, "weights_id": self.weights_id,
                "taps": list(self.taps), "pooling": self.pooling, "preprocess": self.preprocess, "store": None,
                "long_text": self.long_text, "engine": self.engine, "device": self.device}

    def describe(self) -> dict:
        """What the keys mean, as the cache's catalogue (and a Parquet data set's sidecar) records it."""
        return {"backbone": self.backbone, "weights": self.weights_id, "pooling": self.pooling,
                "meta": {"preprocess": self.preprocess, "format": FORMAT, "runtime": self.engine.runtime,
                         "precision": self.engine.precision}}

    def save(self, tap: str, digests: list[str], vecs: np.ndarray) -> None:
        """Keep the rows this tap still needs (in the cache, or in memory without one or with a
        read-only one). A row arriving twice (a task Ray ran again) is kept once."""
        first: dict[str, int] = {}  # a digest twice in one flush (a task run again) keeps its first row
        for j, d in enumerate(digests):
            if d in self.needed[tap]:
                first.setdefault(d, j)
        keep = list(first.values())
        if not keep:
            return
        rows, kept = vecs[keep], [digests[j] for j in keep]
        if self.store is None or self.store.read_only:
            self.memory[tap].update(zip(kept, rows))
        else:
            self.store.put(self.keys[tap], kept, rows, self.describe() | {"tap": tap})
        self.needed[tap].difference_update(kept)

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
        if not digests:
            return np.empty((0, self.width(tap)), np.float32)
        if not stored:
            return np.stack([fresh[d] for d in digests])
        out = np.empty((len(digests), self.width(tap)), np.float32)
        out[stored] = self.store.get(self.keys[tap], [digests[i] for i in stored])
        for i, d in enumerate(digests):
            if d in fresh:
                out[i] = fresh[d]
        return out


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


def ready_backbone(name: str, weights: str, weights_id: str, device: str, long_text: str) -> Backbone:
    bb = get_backbone(name, weights, weights_id, device)
    if bb.modality == "text":
        bb.long_text = long_text
    return bb


def front_end(job: Job):
    """What reads and embeds the items: the built backbone, or for images on an exported ONNX graph the
    image path that needs no torch network (:mod:`transfuse.engines.onnx_images`)."""
    spec = get_spec(job.backbone)
    if job.engine.runtime == "onnx" and serves(spec, job.taps, job.pooling):
        return OnnxImages(spec)
    return ready_backbone(job.backbone, job.weights, job.weights_id, job.device, job.long_text)


def embed_batch(bb: Backbone, job: Job, inputs, batch_digests: list[str], ok,
                pending: dict[str, list[np.ndarray]], pending_digests: list[str], runner=None) -> list[str]:
    """One forward pass over the decodable items of a batch; pooled rows go to ``pending`` (one
    list of arrays per tap) and their digests to ``pending_digests``. Returns the digests of the
    items that could not be decoded."""
    good = [j for j in range(len(batch_digests)) if bool(ok[j])]
    if good:
        with autocast(job.device, job.engine.precision):
            pooled = bb.embed(inputs, good, job.taps, job.pooling, job.device, runner=runner)
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
