"""Process-wide settings, read from the environment once.

``TRANSFUSE_CACHE``  root of the feature cache (default ``~/.cache/transfuse``)
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
    offline: bool
    device: str | None


def _read_settings() -> Settings:
    cache = os.environ.get("TRANSFUSE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "transfuse"
    )
    return Settings(
        cache_dir=Path(cache),
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
