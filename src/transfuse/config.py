"""Process-wide settings, read from the environment once.

``TRANSFUSE_CACHE``  root of the feature cache (default ``~/.cache/transfuse``)
``TRANSFUSE_WEIGHTS`` fetched weights (default ``~/.cache/transfuse-weights``; see backbones/fetch.py)
``HF_HUB_OFFLINE``   when truthy, never try to download weights
``TRANSFUSE_DEVICE`` torch device for extraction (default: cuda if available, else cpu)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    weights_dir: Path
    offline: bool
    device: str | None


def _read_settings() -> Settings:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    cache = os.environ.get("TRANSFUSE_CACHE") or os.path.join(base, "transfuse")
    return Settings(
        cache_dir=Path(cache),
        weights_dir=Path(os.environ.get("TRANSFUSE_WEIGHTS") or os.path.join(base, "transfuse-weights")),
        offline=_truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFUSE_OFFLINE")),
        device=os.environ.get("TRANSFUSE_DEVICE") or None,
    )


SETTINGS = _read_settings()


def default_device() -> str:
    """The torch device extraction runs on unless told otherwise."""
    if SETTINGS.device:
        return SETTINGS.device
    if not _gpu_possible():  # no GPU to find: the answer without importing torch (a second and a half)
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_possible() -> bool:
    """Whether a GPU torch could use may be here: an NVIDIA driver (Linux), WSL's GPU bridge, a ROCm
    device, or a system without /proc (where only torch can tell)."""
    if not os.path.isdir("/proc"):
        return True
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0",
                                           "/dev/dxg", "/dev/kfd"))


def default_workers(n_items: int, device: str) -> int:
    """Decoding processes for extraction. On a GPU the model waits for data: up to 8. On a CPU
    the model already uses every core, and a worker competing for them costs more than it saves
    on small machines (EfficientNet-Lite0 from PNGs on 2 cores: 127 images/s decoding inline vs
    102-121 with one worker), so: none up to 4 cores, then one per 4 cores, at most 4."""
    cores = os.cpu_count() or 1
    if n_items < 64:
        return 0
    if device.startswith("cuda"):
        return min(8, cores)
    return 0 if cores <= 4 else min(4, cores // 4)
