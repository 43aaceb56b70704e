"""Choosing the engine of one extraction: which ``(runtime, precision)`` candidates a request allows,
fastest first, and the first one whose features agree with eager fp32.

The planner knows the backbone only by its spec and the machine only through
:mod:`transfuse.engines.hardware`; how well a candidate agrees is measured by whatever ``measure``
it is handed (a :class:`~transfuse.engines.calibrate.Calibration` in extraction), one candidate at a
time and only when a choice depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from transfuse.backbones.spec import BackboneSpec
from transfuse.engines.hardware import compiler_missing, native_bf16, onnx_available
from transfuse.errors import DataError, EngineError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "compile", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_COSINE = 0.99
FP32_MIN_COSINE = 0.999
COMPILE_MIN_ITEMS = 4000  # new items it takes for auto to build a package (see compile_pays)

Candidate = tuple[str, str]  # (runtime, precision)
# measure(candidates, retry) -> {candidate: (worst cosine to eager fp32 or None, engine file or None, error or None)}
Measure = Callable[[list[Candidate], bool], dict[Candidate, tuple]]


@dataclass(frozen=True)
class Plan:
    """How one extraction runs, and the agreement with eager fp32 that justified it."""

    runtime: str  # "torch", "compile", "onnx", or a frozen encoder's own ("native")
    precision: str  # "fp32" or "bf16"
    cosine: float | None = None  # worst per-item cosine to eager fp32 over the taps (None: not measured)
    file: str | None = None  # the exported graph (onnx) or compiled package (compile) it runs

    def label(self, speed: str = "") -> str:
        """``torch bf16 at 120/s; cosine >= 0.9969 to eager fp32`` (the parts that are known)."""
        agree = f"; cosine >= {self.cosine:.5f} to eager fp32" if self.cosine is not None and self.cosine < 1.0 else ""
        return f"{self.runtime} {self.precision}{speed}{agree}"


def check_request(runtime: str, precision: str) -> None:
    """Reject unknown runtime or precision names before any work."""
    if runtime not in RUNTIMES:
        raise DataError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise DataError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def capabilities(spec: BackboneSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(runtimes, precisions) a backbone supports: encoders that are not torch networks run their own
    way in fp32; torch image and text networks (fixed layout, batch and token axes dynamic) can be
    compiled and exported to ONNX; every torch network takes bf16."""
    if spec.network != "torch":
        return ("native",), ("fp32",)
    if spec.modality in ("image", "text"):
        return ("torch", "compile", "onnx"), ("fp32", "bf16")
    return ("torch",), ("fp32", "bf16")


def compile_pays(missing_compiled: int, missing_eager: int, package_exists: bool) -> bool:
    """Whether ``auto`` should try the compiled engine, given how many items it would extract and how
    many the other engines would (the fewest; each engine's features are cached under its own keys).
    Never when that means extracting more than staying eager would (a switch must not throw a warm
    cache away); then once the package exists, or when there are enough new items to earn the
    one-off build (15-25 s on 2 cores; the compiled engines measured 1.1-1.3x eager bf16)."""
    return missing_compiled <= missing_eager and (package_exists or missing_eager >= COMPILE_MIN_ITEMS)


def prefers_onnx(modality: str, device: str) -> bool:
    """Measured on a 2-core AVX512 CPU in fp32 (benchmarks/extract_speed.py): ONNX Runtime runs
    EfficientNet-Lite0 1.2-1.3x faster than eager torch, MiniLM no faster; on GPUs torch."""
    return modality == "image" and device.startswith("cpu")


def validate(spec: BackboneSpec, runtime: str, precision: str, device: str) -> None:
    """Raise a clear error when this backbone cannot run as requested on ``device`` (before any work)."""
    check_request(runtime, precision)
    runtimes, precisions = capabilities(spec)
    if runtime not in ("auto", *runtimes):
        raise DataError(f"backbone {spec.name} cannot run on {runtime}; it runs on {', '.join(runtimes)} "
                        f"(use --runtime auto)")
    if precision not in ("auto", *precisions):
        raise DataError(f"backbone {spec.name} cannot run in {precision}; it runs in {', '.join(precisions)} "
                        f"(use --precision auto)")
    if runtimes == ("native",):
        return
    if runtime == "onnx" and precision == "bf16":
        raise DataError("ONNX Runtime runs the exported graph in fp32 here; use --runtime torch for bf16")
    if runtime == "onnx" and not device.startswith("cpu"):
        raise DataError(f"ONNX Runtime runs on the CPU here (the onnxruntime package); use --runtime torch on "
                        f"{device}, or --device cpu")
    if runtime == "onnx" and not onnx_available():
        raise DataError("--runtime onnx needs onnx and onnxruntime: pip install 'transfuse[onnx]'")
    if runtime == "compile" and (reason := compiler_missing(device)):
        raise DataError(f"--runtime compile: {reason}; or use --runtime torch")
    if precision == "bf16" and not device.startswith(("cpu", "cuda")):
        raise DataError(f"bf16 autocast runs on cpu and cuda devices; use --precision fp32 on {device}")


def plan(spec: BackboneSpec, runtime: str, precision: str, device: str, measure: Measure,
         compile_worth: Callable[[str], bool] = lambda precision: False) -> Plan:
    """Resolve the request for one backbone: the first candidate (fastest first) whose measured
    agreement with eager fp32 reaches :func:`min_cosine`; eager fp32 needs no measurement. An
    explicit runtime is measured with ``retry=True`` (a remembered failed build is tried again).
    ``compile_worth(precision)`` says whether ``auto`` may compile (see :func:`compile_pays`)."""
    validate(spec, runtime, precision, device)
    runtimes, _ = capabilities(spec)
    if runtimes == ("native",):
        return Plan("native", "fp32")
    if precision == "auto" and not device.startswith(("cpu", "cuda")):
        precision = "fp32"
    kept, error = None, "no item could be read"
    for rt, pr in candidates(spec, runtime, precision, device, compile_worth):
        if (rt, pr) == ("torch", "fp32"):
            return Plan("torch", "fp32", 1.0)
        cos, file, error = measure([(rt, pr)], runtime != "auto").get((rt, pr), (None, None, error))
        if cos is not None and cos >= min_cosine(pr):
            return Plan(rt, pr, cos, file)
        ran = cos is not None or rt == "torch"  # eager runs even when no item could be checked
        if ran and (kept is None or (cos or -1.0) > (kept.cosine or -1.0)):
            kept = Plan(rt, pr, cos, file)
    if kept is None:  # only an explicit request gets here: its engine could not be built
        what = {"onnx": "exported to ONNX or run there", "compile": "compiled"}.get(runtime, "run")
        raise EngineError(f"{spec.name} could not be {what} ({error}); use --runtime torch")
    if kept.cosine is not None:
        log.warning("%s %s features agree with eager fp32 only to cosine %.4f (< %s); consider --precision "
                    "fp32 --runtime torch", kept.runtime, kept.precision, kept.cosine, min_cosine(kept.precision))
    return kept


def min_cosine(precision: str) -> float:
    """The agreement with eager fp32 an engine must show: 0.99 in bf16, 0.999 in fp32."""
    return BF16_MIN_COSINE if precision == "bf16" else FP32_MIN_COSINE


def candidates(spec: BackboneSpec, runtime: str, precision: str, device: str,
               compile_worth: Callable[[str], bool]) -> Iterator[Candidate]:
    """The ``(runtime, precision)`` pairs a request allows, fastest first. ``auto`` offers only what
    was measured to pay here: bf16 where the device computes it natively, compile on a CPU when
    :func:`compile_pays`, ONNX where :func:`prefers_onnx`. Lazy: a later pair's checks (cache
    lookups for compile) run only when the earlier ones were not taken."""
    runtimes, _ = capabilities(spec)
    rts = [runtime] if runtime != "auto" else [r for r in ("compile", "onnx", "torch") if r in runtimes]
    prs = [precision] if precision != "auto" else ["bf16"] * native_bf16(device) + ["fp32"]
    for pr in prs:
        for rt in rts:
            if rt == "onnx" and pr != "fp32":
                continue
            if runtime == "auto" and rt == "onnx" and not (prefers_onnx(spec.modality, device) and onnx_available()):
                continue
            if runtime == "auto" and rt == "compile" and not (
                    device.startswith("cpu") and compile_worth(pr) and not compiler_missing(device)):
                continue
            yield rt, pr
