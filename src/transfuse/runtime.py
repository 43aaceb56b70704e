"""Which engine runs a backbone's forward pass: eager torch (fp32 or bf16 autocast) or ONNX Runtime.

``--runtime auto|torch|onnx`` and ``--precision auto|fp32|bf16`` name the request; :func:`plan`
turns it into a :class:`Plan` for one backbone, tap set and device. ``auto`` is decided by a
*calibration* on the user's first items, run once and remembered in the cache folder:

- bf16 autocast is used when the device computes bf16 natively (AVX512-BF16/AMX CPUs, recent
  GPUs) and every tap's features of the calibration items keep a cosine similarity of at least
  0.99 with eager fp32 (the fastest engine measured there: about 2x for EfficientNet-Lite0,
  1.6x for MiniLM and the sound-effects CNN on an AVX512-BF16 CPU);
- otherwise fp32, on ONNX Runtime when the backbone prefers it on this device and the exported
  graph agrees with eager fp32 to a cosine of at least 0.999 (Lite0 on CPU: 1.2-1.3x), else eager.

Explicit choices are honoured (an unsupported one is a clear error). The resolved runtime and
precision are part of every cache key, so features from different paths never mix.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transfuse.atomic import atomic_write_text
from transfuse.cache import make_key
from transfuse.errors import DataError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_COSINE = 0.99
ONNX_MIN_COSINE = 0.999
CALIBRATION_ITEMS = 8
CHECKS_FILE = "runtime_checks.json"


@dataclass(frozen=True)
class Plan:
    """How one extraction runs, and the agreement with eager fp32 that justified it."""

    runtime: str  # "torch", "onnx", or a frozen encoder's own ("native")
    precision: str  # "fp32" or "bf16"
    cosine: float | None = None  # worst per-item cosine to eager fp32 over the taps (None: not measured)
    onnx_file: str | None = None

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


def capabilities(spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(runtimes, precisions) a backbone supports: frozen non-torch encoders run their own way in
    fp32; torch image and text networks can be exported to ONNX; every torch network takes bf16."""
    if not spec.trainable or spec.fitted:
        return ("native",), ("fp32",)
    if spec.modality in ("image", "text"):
        return ("torch", "onnx"), ("fp32", "bf16")
    return ("torch",), ("fp32", "bf16")


@functools.lru_cache(maxsize=8)
def native_bf16(device: str) -> bool:
    """True when ``device`` computes bf16 in hardware (not emulated, which would be slower than fp32):
    CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    if device.startswith("cpu"):
        return bool(_cpu_bf16_features())
    return False


@functools.lru_cache(maxsize=1)
def _cpu_bf16_features() -> tuple[str, ...]:
    """The CPU's native bf16 instruction sets that torch reports (``avx512_bf16``, ``amx_tile``)."""
    cpu = getattr(torch, "cpu", None)
    return tuple(name for name in ("avx512_bf16", "amx_tile")
                 if bool(getattr(cpu, f"_is_{name}_supported", lambda: False)()))


@functools.lru_cache(maxsize=1)
def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def prefers_onnx(modality: str, device: str) -> bool:
    """Measured on a 2-core AVX512 CPU in fp32 (benchmarks/extract_speed.py): ONNX Runtime runs
    EfficientNet-Lite0 1.2-1.3x faster than eager torch, MiniLM no faster; on GPUs torch."""
    return modality == "image" and device.startswith("cpu")


def validate(spec, runtime: str, precision: str, device: str) -> None:
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
    if precision == "bf16" and not device.startswith(("cpu", "cuda")):
        raise DataError(f"bf16 autocast runs on cpu and cuda devices; use --precision fp32 on {device}")


def plan(spec, runtime: str, precision: str, device: str, calibrate) -> Plan:
    """Resolve the request for one backbone. ``calibrate(candidates)`` measures, on real items,
    the agreement of each candidate ``(runtime, precision)`` with eager fp32 (returning
    ``{candidate: (cosine, onnx_file, error)}``, cosine None when the candidate failed to run);
    it is only called when a choice depends on it."""
    validate(spec, runtime, precision, device)
    runtimes, _ = capabilities(spec)
    if runtimes == ("native",):
        return Plan("native", "fp32")
    if precision == "auto" and not device.startswith(("cpu", "cuda")):
        precision = "fp32"

    if precision == "bf16" or runtime == "onnx":  # explicit: honoured, with a warning when it disagrees
        rt, pr = ("onnx", "fp32") if runtime == "onnx" else ("torch", "bf16")
        cos, onnx_file, error = calibrate([(rt, pr)]).get((rt, pr), (None, None, "no item could be read"))
        if rt == "onnx" and onnx_file is None:
            raise DataError(f"{spec.name} could not be exported to ONNX or run there ({error}); use --runtime torch")
        floor = ONNX_MIN_COSINE if rt == "onnx" else BF16_MIN_COSINE
        if cos is not None and cos < floor:
            log.warning("%s %s features agree with eager fp32 only to cosine %.4f (< %s); consider --precision "
                        "fp32 --runtime torch", rt, pr, cos, floor)
        return Plan(rt, pr, cos, onnx_file)
    # auto, cheapest check first: an ONNX export is only tried when bf16 is not taken
    if precision == "auto" and runtime in ("auto", "torch") and native_bf16(device):
        cos = calibrate([("torch", "bf16")]).get(("torch", "bf16"), (None,))[0]
        if cos is not None and cos >= BF16_MIN_COSINE:
            return Plan("torch", "bf16", cos)
    if runtime == "auto" and "onnx" in runtimes and prefers_onnx(spec.modality, device) and onnx_available():
        cos, onnx_file, _ = calibrate([("onnx", "fp32")]).get(("onnx", "fp32"), (None, None, None))
        if cos is not None and cos >= ONNX_MIN_COSINE:
            return Plan("onnx", "fp32", cos, onnx_file)
    return Plan("torch", "fp32", 1.0)


# --- remembered calibrations -----------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def device_kind(device: str) -> str:
    """What decides how a device computes: the GPU model, or the CPU's bf16/AMX support."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu:" + ",".join(_cpu_bf16_features())


@functools.lru_cache(maxsize=1)
def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for pkg in ("torch", "timm", "transformers", "onnx", "onnxruntime"):
        try:
            found.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return ",".join(found)


def check_key(backbone: str, weights_id: str, taps: list[str], pooling: str, preprocess: str, device: str) -> str:
    """Identity of one calibration: the same backbone, taps and pooling on the same kind of device,
    with the same library versions (an upgrade may change a network or its exported graph)."""
    return make_key(backbone=backbone, weights=weights_id, taps=",".join(sorted(taps)), pooling=pooling,
                    preprocess=preprocess, device=device_kind(device), versions=_versions())


_UNSAVED: dict[str, dict] = {}  # checks made without a cache folder, for the rest of the process


def load_checks(root: Path | None) -> dict:
    """Remembered calibrations: ``runtime_checks.json`` in the cache folder."""
    if root is None:
        return _UNSAVED
    try:
        return json.loads((root / CHECKS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def save_check(root: Path | None, key: str, record: dict) -> None:
    """Add one calibration to ``runtime_checks.json`` (read, merge and replace under a lock, so
    processes calibrating at once keep each other's records)."""
    if root is None:
        _UNSAVED[key] = record
        return
    import fcntl

    try:
        with open(root / f"{CHECKS_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            checks = load_checks(root)
            checks[key] = record
            atomic_write_text(root / CHECKS_FILE, json.dumps(checks, indent=1) + "\n")
    except OSError as exc:  # a read-only cache still extracts; it calibrates again next time
        log.debug("cannot remember the runtime check: %s", exc)


def worst_cosine(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """The smallest per-item cosine similarity between two sets of pooled tap features."""
    worst = 1.0
    for tap, a in ref.items():
        a, b = a.double(), other[tap].double()
        if not torch.isfinite(b).all():
            return -1.0  # NaN or inf: no agreement at all (min() would skip a NaN)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
        both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
        worst = min(worst, float(torch.where(both_zero, torch.ones_like(cos), cos).min()))
    return worst


# --- ONNX export and execution ---------------------------------------------------------------------

def onnx_session(path: str):
    """An ONNX Runtime CPU session using as many threads as torch does, quiet unless it fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """Runs an exported tap network: input tensors in, a dict of raw tap outputs (torch) out."""

    def __init__(self, model: str, taps: list[str]) -> None:
        self.session = onnx_session(model)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.taps = taps

    def __call__(self, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        feeds = {name: t.detach().cpu().contiguous().numpy() for name, t in zip(self.inputs, tensors)}
        outputs = self.session.run(self.taps, feeds)
        return {tap: torch.from_numpy(np.asarray(o)) for tap, o in zip(self.taps, outputs)}


def export_onnx(backbone, taps: list[str], sample: tuple[torch.Tensor, ...], path: Path) -> str:
    """Export ``backbone.tap_network(taps)`` to ``path`` with all ``taps`` as outputs, the batch (and
    sequence) axes dynamic; written beside and renamed, so a killed export leaves no half file."""
    network = backbone.tap_network(taps).eval()
    names = backbone.input_names
    axes = {name: dict(backbone.dynamic_axes) for name in names}
    axes.update({tap: dict(backbone.dynamic_axes) for tap in taps})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow: the taps are fixed
            torch.onnx.export(network, tuple(t.cpu() for t in sample), str(partial), input_names=list(names),
                              output_names=taps, dynamic_axes=axes, opset_version=17, dynamo=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return str(path)


# --- running candidates --------------------------------------------------------------------------

def autocast(device: str, precision: str):
    """bf16 autocast on ``device`` when ``precision`` says so (a no-op context otherwise)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=precision == "bf16")


_RUNNERS: OrderedDict[str, OnnxRunner] = OrderedDict()  # sessions on exported graphs, by file


def onnx_runner(path: str | None, taps: list[str]) -> OnnxRunner:
    """A session on an exported graph (kept for reuse: building one costs about a second)."""
    if path not in _RUNNERS:
        if not path or not os.path.isfile(path):
            raise DataError(f"the exported ONNX graph is missing ({path or 'not exported'}); run again (it is "
                            f"exported anew), or use --runtime torch")
        _RUNNERS[path] = OnnxRunner(path, taps)
        while len(_RUNNERS) > 2:
            _RUNNERS.popitem(last=False)
    return _RUNNERS[path]


def graph_opens(entry: dict, taps: list[str]) -> bool:
    """Whether a remembered exported graph is still there and opens (else it is exported again)."""
    try:
        onnx_runner(entry.get("file"), taps)
        return True
    except Exception as exc:  # missing, truncated or from an incompatible exporter
        log.info("exporting again: %s", exc)
        return False


def measure_engine(bb, candidate: tuple[str, str], inputs, good: list[int], reference: dict, taps: list[str],
                   pooling: str, device: str, root: Path | None, key: str) -> dict:
    """Run one candidate engine on the calibration batch and compare with ``reference`` (eager
    fp32). An ONNX graph is exported first and also checked on a smaller batch (its batch axis
    must really be dynamic); a failed export is recorded, not raised."""
    rt, pr = candidate
    if rt != "onnx":
        with autocast(device, pr):
            return {"cosine": worst_cosine(reference, bb.embed(inputs, good, taps, pooling, device))}
    folder = root / "onnx" if root is not None else Path(_scratch_dir())
    try:
        path = export_onnx(bb, taps, bb.network_inputs(inputs, good, "cpu"), folder / f"{key}.onnx")
        _RUNNERS.pop(path, None)
        runner = onnx_runner(path, taps)
        cos = worst_cosine(reference, bb.embed(inputs, good, taps, pooling, device, runner=runner))
        half = good[: max(1, len(good) // 2)]
        sub = bb.embed(inputs, half, taps, pooling, device, runner=runner)
        cos = min(cos, worst_cosine({t: v[: len(half)] for t, v in reference.items()}, sub))
    except Exception as exc:  # the exporter meets all sorts of models: auto falls back to torch
        log.info("ONNX export of %s failed: %s", bb.name, exc)
        return {"cosine": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"cosine": cos, "file": path}


@functools.lru_cache(maxsize=1)
def _scratch_dir() -> str:
    """Where exported graphs go when there is no cache folder: private to this process."""
    return tempfile.mkdtemp(prefix="transfuse-onnx-")
