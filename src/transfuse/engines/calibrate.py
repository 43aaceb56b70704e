"""Calibration: does a candidate engine compute the same features as eager fp32 on the user's own
first items? Measured once, remembered in the :class:`~transfuse.engines.store.EngineStore`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.cache import make_key
from transfuse.engines.compiled import compile_id, compile_network
from transfuse.engines.hardware import autocast, device_kind, engine_versions
from transfuse.engines.onnx import export_onnx
from transfuse.engines.planner import Candidate
from transfuse.engines.runners import forget, load_runner, opens
from transfuse.engines.store import EngineStore

if TYPE_CHECKING:  # imported where it runs: loading this module needs no torch
    import torch

log = logging.getLogger(__name__)
CALIBRATION_ITEMS = 8


def check_key(backbone: str, weights_id: str, taps: list[str], pooling: str, preprocess: str, device: str) -> str:
    """Identity of one calibration: the same backbone, taps and pooling on the same kind of device,
    with the same library versions (an upgrade may change a network or its exported graph)."""
    return make_key(backbone=backbone, weights=weights_id, taps=",".join(sorted(taps)), pooling=pooling,
                    preprocess=preprocess, device=device_kind(device), versions=engine_versions())


@dataclass
class Calibration:
    """Measures candidate engines for one extraction (a ``measure`` for :func:`~transfuse.engines.planner.plan`):
    each candidate's features of the first readable ``items`` against eager fp32's, every tap, as
    ``{candidate: (worst cosine or None, graph or package file or None, error or None)}``.

    The result is remembered per backbone, taps, pooling, kind of device and library versions; the
    ``backbone`` (a zero-argument loader) is built only when something has to be measured. A
    remembered failed build is tried again only with ``retry`` (an explicit request)."""

    store: EngineStore
    backbone: Callable[[], object]
    name: str
    weights_id: str
    items: list[str]
    taps: list[str]
    pooling: str
    preprocess: str
    device: str
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = check_key(self.name, self.weights_id, self.taps, self.pooling, self.preprocess, self.device)

    def package(self) -> str:
        return compile_id(self.name, self.weights_id, self.device)

    def __call__(self, candidates: list[Candidate], retry: bool = False) -> dict[Candidate, tuple]:
        record = dict(self.store.checks().get(self.key, {}))
        label = {c: f"{c[0]}-{c[1]}" for c in candidates}
        too_few = record.get("items", 0) < min(CALIBRATION_ITEMS, len(self.items))
        todo = [c for c in candidates if too_few or label[c] not in record or self._stale(c, record[label[c]], retry)]
        if todo and self.items:
            self._measure(todo, record, label)
        return {c: (record[label[c]].get("cosine"), record[label[c]].get("file"), record[label[c]].get("error"))
                for c in candidates if label[c] in record}

    def _stale(self, candidate: Candidate, entry: dict, retry: bool) -> bool:
        """A failure to retry, or a built engine that is gone or not this machine's."""
        if entry.get("cosine") is None:
            return retry
        if not entry.get("file"):
            return False
        if candidate[0] == "compile" and entry["file"] != str(self.artifact(candidate)):
            return True  # a package of another machine or version, found through a shared cache folder
        return not opens(candidate[0], entry["file"], self.taps, entry.get("outputs"), self.device)

    def artifact(self, candidate: Candidate) -> Path | None:
        return self.store.artifact_path(candidate, self.key, self.package())

    def _measure(self, todo: list[Candidate], record: dict, label: dict) -> None:
        bb = self.backbone()
        batches = bb.batches(self.items[:4 * CALIBRATION_ITEMS], CALIBRATION_ITEMS, 0, self.device)
        readable = ((inputs, [j for j in range(len(ok)) if bool(ok[j])]) for inputs, _, ok in batches)
        inputs, good = next(((x, g) for x, g in readable if g), (None, []))
        if not good:
            return
        reference = bb.embed(inputs, good, self.taps, self.pooling, self.device)
        for candidate in todo:
            record[label[candidate]] = measure_engine(bb, candidate, inputs, good, reference, self.taps, self.pooling,
                                                      self.device, self.artifact(candidate))
        record["items"] = len(good)
        self.store.save_check(self.key, record)
        log.info("runtime check for %s on %d items: %s", self.name, len(good), ", ".join(
            f"{n} cos {v['cosine']:.5f}" if v.get("cosine") is not None else f"{n} failed ({v.get('error')})"
            for n, v in record.items() if isinstance(v, dict)))


def worst_cosine(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """The smallest per-item cosine similarity between two sets of pooled tap features."""
    import torch

    worst = 1.0
    for tap, a in ref.items():
        a, b = a.double(), other[tap].double()
        if not torch.isfinite(b).all():
            return -1.0  # NaN or inf: no agreement at all (min() would skip a NaN)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
        both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
        worst = min(worst, float(torch.where(both_zero, torch.ones_like(cos), cos).min()))
    return worst


def measure_engine(bb, candidate: Candidate, inputs, good: list[int], reference: dict, taps: list[str],
                   pooling: str, device: str, artifact: Path | None) -> dict:
    """Run one candidate engine on the calibration batch and compare with ``reference`` (eager
    fp32), then on a batch of one (the batch axis must really be dynamic). An ONNX graph is
    exported first; a compiled package is built unless a working one is there (one that fails
    here is built again). A failed build is recorded, not raised."""
    rt, pr = candidate
    if rt == "torch":
        with autocast(device, pr):
            return {"cosine": worst_cosine(reference, bb.embed(inputs, good, taps, pooling, device))}

    def agreement(path: str) -> float:
        runner = load_runner(rt, path, taps, bb.tap_names, device)
        cos = worst_cosine(reference, bb.embed(inputs, good, taps, pooling, device, runner=runner))
        one = bb.embed(inputs, good[:1], taps, pooling, device, runner=runner)
        return min(cos, worst_cosine({t: v[:1] for t, v in reference.items()}, one))

    def sample():
        return bb.network_inputs(inputs, good, "cpu" if rt == "onnx" else device)

    outputs = {"outputs": bb.tap_names} if rt == "compile" else {}  # a package's outputs: every tap
    broken = None
    try:
        if rt == "compile" and artifact.is_file():
            inode = artifact.stat().st_ino
            try:
                return {"cosine": agreement(str(artifact)), "file": str(artifact), **outputs}
            except Exception as exc:  # from another version, truncated, or wrong outputs: built again
                log.info("building %s again: %s", artifact.name, exc)
                broken = inode
                forget(str(artifact))
        if rt == "onnx":
            path = export_onnx(bb, taps, sample(), artifact)
        else:
            path = compile_network(bb, sample(), pr, device, artifact, broken)
        forget(path)
        return {"cosine": agreement(path), "file": path, **outputs}
    except Exception as exc:  # exporters and compilers meet all sorts of models: auto falls back to torch
        log.info("%s of %s failed: %s", "ONNX export" if rt == "onnx" else "compiling", bb.name, exc)
        return {"cosine": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
