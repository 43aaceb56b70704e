"""Process-wide settings, read from the environment once.

``TRANSFUSE_CACHE``  root of the feature cache (default ``~/.cache/transfuse``)
``TRANSFUSE_WEIGHTS`` fetched weights (default ``~/.cache/transfuse-weights``; see weights.py)
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
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
