"""The files of a model directory: names, format version, reading them with clear errors."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

import numpy as np

from transfuse.errors import ModelDirError

FORMAT_VERSION = 4  # 4: one list of parts; 3: extraction engines, tfidf; 2: steps, fine-tuned models; 1: probes
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.json"
_VERSIONED = ("transfuse", "torch", "timm", "scikit-learn", "numpy", "safetensors")


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries a saved model's numbers depend on."""
    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def read_config(model_dir: str | Path) -> dict:
    """The parsed ``config.json`` of a model directory (any format), with clear errors when unusable."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelDirError(f"model directory not found: {path}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path} has no {CONFIG}; is it a transfuse model directory (saved completely)?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path / CONFIG} is not valid JSON ({exc}); the save was broken, fit again") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int):
        raise ModelDirError(f"{path / CONFIG} has no format_version; it was not written by transfuse")
    if version > FORMAT_VERSION:
        versions = config.get("versions")
        saved_by = versions.get("transfuse", "a newer transfuse") if isinstance(versions, dict) else "a newer transfuse"
        raise ModelDirError(f"{path} was saved by transfuse {saved_by} in model format {version}; this transfuse reads "
                            f"format {FORMAT_VERSION} and older: upgrade with `pip install -U transfuse`")
    return config


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a safetensors file, with clear errors for a missing or broken one."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise ModelDirError(f"{path.parent} has no {path.name}; the save was incomplete, fit again") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot read {path} ({exc}); the save was broken, fit again") from None
