"""What this machine can compute: native bf16, ONNX Runtime, a C++ compiler for torch.compile, and
an identity of the device kind (calibrations and compiled packages are only valid on the same one)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import platform
import shutil


def autocast(device: str, precision: str):
    """bf16 autocast on ``device`` when ``precision`` says so (a no-op context otherwise, without
    importing torch: the ONNX image path runs without it)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=8)
def native_bf16(device: str) -> bool:
    """True when ``device`` computes bf16 in hardware (not emulated, which would be slower than fp32):
    CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    if device.startswith("cpu"):
        return bool(cpu_bf16_features())
    return False


@functools.lru_cache(maxsize=1)
def cpu_bf16_features() -> tuple[str, ...]:
    """The CPU's native bf16 instruction sets (``avx512_bf16``, ``amx_tile``): the kernel's CPU flags
    on Linux (no torch import), what torch reports elsewhere."""
    flags = _cpu_flags()
    if flags is not None:
        return tuple(name for name in ("avx512_bf16", "amx_tile") if name in flags)
    import torch

    cpu = getattr(torch, "cpu", None)
    return tuple(name for name in ("avx512_bf16", "amx_tile")
                 if bool(getattr(cpu, f"_is_{name}_supported", lambda: False)()))


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, ...] | None:
    """The lines of /proc/cpuinfo, read once (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as info:
            return tuple(info)
    except OSError:
        return None


def _cpu_flags() -> set[str] | None:
    flags = next((line for line in _cpuinfo() or () if line.startswith("flags")), None)
    return None if flags is None else set(flags.split(":", 1)[1].split())


@functools.lru_cache(maxsize=1)
def onnx_available() -> bool:
    """Whether the exporter (onnx) and ONNX Runtime are installed."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def quiet_inductor():
    """Importing inductor on a machine without CUDA logs a warning about CUDA_HOME; not ours to show."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.lru_cache(maxsize=4)
def compiler_missing(device: str) -> str | None:
    """Why torch.compile cannot build here (None when it can): it needs a C++ compiler, and Triton
    on a GPU."""
    if not device.startswith(("cpu", "cuda")):
        return f"torch.compile runs on cpu and cuda devices here, not {device}"
    try:
        with quiet_inductor():
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


@functools.lru_cache(maxsize=8)
def device_kind(device: str) -> str:
    """What decides how a device computes: the GPU model; or the CPU's bf16/AMX support and a
    fingerprint of its model and instruction sets (compiled kernels use every instruction the CPU
    has, so a package built on one CPU may crash another)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    return "cpu:" + ",".join(cpu_bf16_features()) + ":" + _cpu_fingerprint()


_ISA_FLAGS = ("sse", "ssse", "avx", "amx", "fma", "f16c", "bmi", "popcnt", "movbe", "aes", "sha", "vaes",
              "vpclmul", "gfni", "adx", "lzcnt", "abm")


@functools.lru_cache(maxsize=1)
def _cpu_fingerprint() -> str:
    described = platform.machine() + platform.processor()
    lines = set(_cpuinfo() or ())  # not Linux: the platform strings are what there is
    described += "".join(sorted(line for line in lines if line.startswith(("model name", "Features", "CPU part"))))
    for line in lines:  # instruction sets only: mitigation flags change with kernel and microcode updates
        if line.startswith("flags"):
            described += " ".join(sorted(f for f in line.split(":", 1)[1].split() if f.startswith(_ISA_FLAGS)))
    return hashlib.sha256(described.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def engine_versions() -> str:
    """Versions of the libraries that build and run engines (an upgrade may change a network,
    its exported graph or its compiled kernels)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for pkg in ("torch", "timm", "transformers", "onnx", "onnxruntime"):
        try:
            found.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return ",".join(found)
