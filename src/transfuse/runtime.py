"""Which engine runs a backbone's forward pass: eager torch, torch.compile ahead of time, or ONNX Runtime.

``--runtime auto|torch|compile|onnx`` and ``--precision auto|fp32|bf16`` name the request;
:func:`plan` turns it into a :class:`Plan` for one backbone, tap set and device. Candidates are
tried fastest first, each accepted only when a *calibration* on the user's first items (run once,
remembered in the cache folder) shows every tap agreeing with eager fp32 to a cosine of at least
0.99 (bf16) or 0.999 (other fp32 engines):

1. ``compile``: the network with every tap as an output, compiled by torch.compile's ahead-of-time
   mode (AOTInductor, frozen weights) into a ``.pt2`` package kept in the cache folder and loaded in
   a fraction of a second afterwards (docs/benchmarks.md: 1.2-1.3x eager bf16 for MiniLM and
   DINOv2 after a one-off compile of 20-30 s on 2 cores; for BatchNorm CNNs its bf16 build folds the
   norms into bf16 weights and misses the 0.99 agreement, while its fp32 build is exact and about as
   fast as eager bf16). ``auto`` considers it on a CPU with a C++ compiler (see :func:`compile_pays`);
2. eager bf16 autocast, when the device computes bf16 natively (AVX512-BF16/AMX CPUs, recent GPUs);
3. fp32 on ONNX Runtime when the backbone prefers it on this device (Lite0 on CPU: 1.2-1.3x eager);
4. eager fp32, the reference.

Explicit choices are honoured (with a warning when they agree less); unsupported ones are clear
errors. The resolved runtime and precision are part of every cache key, so features from
different paths never mix.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transfuse.atomic import atomic_write_text, exclusive_lock
from transfuse.cache import make_key
from transfuse.errors import DataError, EngineError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "compile", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MIN_COSINE = 0.99
FP32_MIN_COSINE = 0.999
CALIBRATION_ITEMS = 8
CHECKS_FILE = "runtime_checks.json"
COMPILE_MIN_ITEMS = 4000  # new items it takes for auto to build a package (see compile_pays)
COMPILE_FORMAT = 1  # bump when the compiled network changes (its inputs, outputs or wrapper)


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


def capabilities(spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(runtimes, precisions) a backbone supports: frozen non-torch encoders run their own way in
    fp32; torch image and text networks (fixed layout, batch and token axes dynamic) can be
    compiled and exported to ONNX; every torch network takes bf16."""
    if not spec.trainable or spec.fitted:
        return ("native",), ("fp32",)
    if spec.modality in ("image", "text"):
        return ("torch", "compile", "onnx"), ("fp32", "bf16")
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


@functools.lru_cache(maxsize=4)
def compiler_missing(device: str) -> str | None:
    """Why torch.compile cannot build here (None when it can): it needs a C++ compiler, and Triton
    on a GPU."""
    import shutil

    if not device.startswith(("cpu", "cuda")):
        return f"torch.compile runs on cpu and cuda devices here, not {device}"
    try:
        with _quiet_inductor():
            from torch._inductor.cpp_builder import get_cpp_compiler

            compiler = get_cpp_compiler()
    except Exception as exc:  # no compiler found, or an inductor without the builder
        return f"no C++ compiler found ({exc}); install g++ (Debian: apt install g++)"
    if not shutil.which(compiler.split()[0]):
        return f"the C++ compiler {compiler!r} is not installed (Debian: apt install g++)"
    if device.startswith("cuda"):
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on a GPU needs Triton (pip install triton)"
    return None


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
    if runtime == "compile" and (reason := compiler_missing(device)):
        raise DataError(f"--runtime compile: {reason}; or use --runtime torch")
    if precision == "bf16" and not device.startswith(("cpu", "cuda")):
        raise DataError(f"bf16 autocast runs on cpu and cuda devices; use --precision fp32 on {device}")


def plan(spec, runtime: str, precision: str, device: str, calibrate,
         compile_worth=lambda precision: False) -> Plan:
    """Resolve the request for one backbone. ``calibrate(candidates)`` measures, on real items,
    the agreement of each candidate ``(runtime, precision)`` with eager fp32 (returning
    ``{candidate: (cosine, file, error)}``, cosine None when the candidate failed to run); it is
    called one candidate at a time, fastest first, and only when a choice depends on it, with
    ``retry=True`` for an explicit runtime (a remembered failed build is tried again).
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
        cos, file, error = calibrate([(rt, pr)], runtime != "auto").get((rt, pr), (None, None, error))
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


def candidates(spec, runtime: str, precision: str, device: str, compile_worth) -> Iterator[tuple[str, str]]:
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


# --- remembered calibrations -----------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def device_kind(device: str) -> str:
    """What decides how a device computes: the GPU model; or the CPU's bf16/AMX support and a
    fingerprint of its model and instruction sets (compiled kernels use every instruction the CPU
    has, so a package built on one CPU may crash another)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu:" + ",".join(_cpu_bf16_features()) + ":" + _cpu_fingerprint()


_ISA_FLAGS = ("sse", "ssse", "avx", "amx", "fma", "f16c", "bmi", "popcnt", "movbe", "aes", "sha", "vaes",
              "vpclmul", "gfni", "adx", "lzcnt", "abm")


@functools.lru_cache(maxsize=1)
def _cpu_fingerprint() -> str:
    import hashlib
    import platform

    described = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            lines = set(info)
        described += "".join(sorted(line for line in lines if line.startswith(("model name", "Features", "CPU part"))))
        for line in lines:  # instruction sets only: mitigation flags change with kernel and microcode updates
            if line.startswith("flags"):
                described += " ".join(sorted(f for f in line.split(":", 1)[1].split() if f.startswith(_ISA_FLAGS)))
    except OSError:  # not Linux: the platform strings are what there is
        pass
    return hashlib.sha256(described.encode()).hexdigest()[:12]


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
    try:
        with exclusive_lock(root / f"{CHECKS_FILE}.lock"):
            checks = load_checks(root)
            checks[key] = {**checks.get(key, {}), **record}  # another process's engines for this key stay
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


_RUNNERS: OrderedDict[tuple[str, str], object] = OrderedDict()  # loaded graphs and packages, by file and device


def _forget(path: str) -> None:
    """Drop loaded copies of a graph or package file (it is about to be replaced)."""
    for key in [k for k in _RUNNERS if k[0] == path]:
        del _RUNNERS[key]


def engine_runner(runtime: str, path: str | None, taps: list[str], outputs: list[str] | None = None,
                  device: str = "cpu"):
    """What replaces the eager forward pass: a session on an exported ONNX graph (``taps`` as its
    outputs) or a loaded compiled package (whose outputs are the layers ``outputs``), kept for
    reuse; None for eager torch."""
    if runtime not in ("onnx", "compile"):
        return None
    if (path, device) not in _RUNNERS:
        if not path or not os.path.isfile(path):
            raise DataError(f"the {'exported ONNX graph' if runtime == 'onnx' else 'compiled package'} is missing "
                            f"({path or 'not built'}); run again (it is built anew), or use --runtime torch")
        _RUNNERS[path, device] = OnnxRunner(path, taps) if runtime == "onnx" else CompiledRunner(path, outputs, device)
        while len(_RUNNERS) > 2:
            _RUNNERS.popitem(last=False)
        try:
            os.utime(path)  # marks it used: `cache prune --older-than` keeps what is loaded
        except OSError:  # a read-only cache
            pass
    return _RUNNERS[path, device]


def artifact_opens(runtime: str, path: str | None, taps: list[str], outputs: list[str] | None = None,
                   device: str = "cpu") -> bool:
    """Whether a remembered graph or package is still there and loads (else it is built again)."""
    try:
        engine_runner(runtime, path, taps, outputs, device)
        return True
    except Exception as exc:  # missing, truncated, or from an incompatible exporter or compiler
        log.info("building again: %s", exc)
        return False


def artifact_path(root: Path | None, candidate: tuple[str, str], check: str, package: str,
                  create: bool = True) -> Path | None:
    """Where a candidate's built engine lives: ONNX graphs per tap set (``<cache>/onnx/<check>.onnx``),
    compiled packages per backbone and precision with every tap (``<cache>/compiled/<package>-<precision>.pt2``),
    in a folder private to this process without a cache (``create=False``: None if there is none yet)."""
    rt, pr = candidate
    if rt not in ("onnx", "compile"):
        return None
    if root is None and not create and not _scratch_dir.cache_info().currsize:
        return None  # no private folder yet, so nothing built in it
    folder = Path(_scratch_dir()) if root is None else root / ("onnx" if rt == "onnx" else "compiled")
    return folder / (f"{check}.onnx" if rt == "onnx" else f"{package}-{pr}.pt2")


def compile_id(backbone: str, weights_id: str, device: str) -> str:
    """Identity of a compiled package: the network, the device it was built for (a CPU's model and
    instruction sets: its kernels use all of them), library and transfuse versions."""
    from transfuse import __version__

    return make_key(kind="aoti", format=COMPILE_FORMAT, backbone=backbone, weights=weights_id,
                    device=device_kind(device), versions=_versions(), transfuse=__version__)


@contextlib.contextmanager
def _quiet_inductor():
    """Importing inductor on a machine without CUDA logs a warning about CUDA_HOME; not ours to show."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Autocast(nn.Module):
    """A network run under bf16 autocast (or not), so the precision is compiled into the package."""

    def __init__(self, network: nn.Module, device: str, precision: str) -> None:
        super().__init__()
        self.network, self.device, self.precision = network, device, precision

    def forward(self, *tensors: torch.Tensor):
        with autocast(self.device, self.precision):
            return self.network(*tensors)


def compile_network(backbone, sample: tuple[torch.Tensor, ...], precision: str, device: str, path: Path,
                    broken: int | None = None) -> str:
    """Compile ``backbone.tap_network`` with every tap as an output ahead of time (torch.export, then
    AOTInductor with frozen weights) into a ``.pt2`` package at ``path``; the batch (and token) axes
    stay dynamic. Built beside and renamed, so a killed compile leaves no half file; one build at a
    time (a file lock), and a working package another process built meanwhile is used as it is.
    ``broken``: the inode of a package at ``path`` found not to work, replaced (not one built since)."""
    from torch.export import Dim

    network = _Autocast(backbone.tap_network(backbone.tap_names).eval(), device, precision)
    # every input's batch (and token) axes dynamic, their ranges inferred by the exporter
    shapes = tuple({axis: Dim.DYNAMIC for axis in backbone.dynamic_axes} for _ in backbone.input_names)
    sample = tuple(_two_or_more(t) for t in sample)  # a batch of one would be compiled as a constant
    path.parent.mkdir(parents=True, exist_ok=True)
    import socket

    with exclusive_lock(path.with_suffix(".lock")):  # one build at a time; the others then load it
        if path.is_file():
            if broken is not None and path.stat().st_ino == broken:
                _forget(str(path))
                path.unlink()
            elif artifact_opens("compile", str(path), [], backbone.tap_names, device):
                return str(path)
        _forget(str(path))
        partial = path.with_name(f"{path.stem}.{socket.gethostname()}.{os.getpid()}.partial.pt2")
        log.info("compiling %s (%s) with torch.compile ahead of time: once per machine, about half a minute on "
                 "2 cores; kept in %s", backbone.name, precision, path.parent)
        try:
            with _quiet_inductor(), warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                import torch._inductor as inductor

                program = torch.export.export(network, sample, dynamic_shapes=(shapes,))
                with inductor.config.patch(freezing=True):  # weights as constants: prepacked kernels
                    inductor.aoti_compile_and_package(program, package_path=str(partial))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return str(path)


def _two_or_more(t: torch.Tensor) -> torch.Tensor:
    if t.shape[0] >= 2:
        return t
    doubled = torch.cat([t, t])
    return doubled.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else doubled


class CompiledRunner:
    """Runs a compiled package: input tensors in, a dict of the raw outputs of every tap out."""

    def __init__(self, path: str, outputs: list[str], device: str = "cpu") -> None:
        with _quiet_inductor():
            import torch._inductor as inductor

            index = torch.device(device).index
            self.model = inductor.aoti_load_package(path, device_index=-1 if index is None else index)
        self.path, self.taps = path, list(outputs)

    def __call__(self, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        outputs = self.model(*tensors)
        if len(outputs) != len(self.taps):
            raise DataError(f"the compiled package {self.path} has {len(outputs)} outputs for {len(self.taps)} "
                            f"layers; delete that file and run again (it is built anew)")
        return dict(zip(self.taps, outputs))


def measure_engine(bb, candidate: tuple[str, str], inputs, good: list[int], reference: dict, taps: list[str],
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
        runner = engine_runner(rt, path, taps, bb.tap_names, device)
        cos = worst_cosine(reference, bb.embed(inputs, good, taps, pooling, device, runner=runner))
        one = bb.embed(inputs, good[:1], taps, pooling, device, runner=runner)
        return min(cos, worst_cosine({t: v[:1] for t, v in reference.items()}, one))

    sample = lambda: bb.network_inputs(inputs, good, "cpu" if rt == "onnx" else device)  # noqa: E731
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
        if rt == "onnx":
            path = export_onnx(bb, taps, sample(), artifact)
        else:
            path = compile_network(bb, sample(), pr, device, artifact, broken)
        _forget(path)
        return {"cosine": agreement(path), "file": path, **outputs}
    except Exception as exc:  # exporters and compilers meet all sorts of models: auto falls back to torch
        log.info("%s of %s failed: %s", "ONNX export" if rt == "onnx" else "compiling", bb.name, exc)
        return {"cosine": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}


@functools.lru_cache(maxsize=1)
def _scratch_dir() -> str:
    """Where exported graphs and compiled packages go without a cache folder: private to this
    process, removed when it ends."""
    import atexit
    import shutil

    folder = tempfile.mkdtemp(prefix="transfuse-engines-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
