"""The saved artefact: a directory with ``config.json``, ``head.safetensors`` and ``metrics.json``.

A model is an sklearn ``Pipeline([("features", FeatureExtractor), ("head", Head)])``.
``save_model`` writes it without pickle (configuration in JSON, learned numbers in
safetensors); ``load_model`` rebuilds it and predicts exactly as before saving.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.pipeline import Pipeline

from transfuse.errors import ModelDirError
from transfuse.extract import FeatureExtractor
from transfuse.heads import HEADS, Head

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "head.safetensors"
METRICS = "metrics.json"
_EXTRACTOR_PARAMS = ("backbone", "layers", "pooling", "weights", "batch_size")


def make_model(extractor: FeatureExtractor, head: Head) -> Pipeline:
    """The standard two-step pipeline: paths -> features -> head."""
    return Pipeline([("features", extractor), ("head", head)])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("transfuse", "torch", "timm", "scikit-learn", "numpy", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def save_model(model: Pipeline, out_dir: str | Path, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Save a fitted pipeline to ``out_dir`` (created if needed) and return its path.

    >>> save_model(model, "models/fashion")  # doctest: +SKIP
    PosixPath('models/fashion')
    """
    extractor, head = _parts(model)
    if not hasattr(head, "state_"):
        raise ModelDirError("the model is not fitted yet; call fit before saving")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = extractor.get_params()
    config = {
        "format_version": FORMAT_VERSION,
        "kind": "feature-probe",
        "extractor": {k: params[k] for k in _EXTRACTOR_PARAMS},
        "layers": list(getattr(extractor, "layers_", []) or []),
        "slices": {k: [s.start, s.stop] for k, s in getattr(extractor, "slices_", {}).items()},
        "head": {"kind": head.kind, "params": head.get_params()},
        "classes": [str(c) for c in head.classes_],
        "versions": _versions(),
        **(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{WEIGHTS}.")
    os.close(fd)
    save_file({k: np.ascontiguousarray(v) for k, v in head.state_.items()}, tmp)
    os.replace(tmp, out / WEIGHTS)
    if metrics is not None:
        _write_json(out / METRICS, metrics)
    _write_json(out / CONFIG, config)  # last: a directory with a config is complete
    return out


def read_config(model_dir: str | Path) -> dict:
    """The parsed ``config.json`` of a model directory, with clear errors when it is unusable."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelDirError(f"model directory not found: {path}")
    try:
        config = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path} has no {CONFIG}; is it a transfuse model directory (saved completely)?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path / CONFIG} is not valid JSON ({exc}); the save was broken, fit again") from None
    version = config.get("format_version")
    if not isinstance(version, int):
        raise ModelDirError(f"{path / CONFIG} has no format_version; it was not written by transfuse")
    if version > FORMAT_VERSION:
        saved_by = config.get("versions", {}).get("transfuse", "a newer transfuse")
        raise ModelDirError(
            f"{path} was saved by transfuse {saved_by} in model format {version}; this transfuse reads "
            f"format {FORMAT_VERSION} and older: upgrade with `pip install -U transfuse`"
        )
    return config


def load_model(model_dir: str | Path, **extractor_overrides) -> Pipeline:
    """Load a model directory saved by :func:`save_model`.

    ``extractor_overrides`` change run-time settings such as ``device``, ``num_workers``
    or ``cache`` (never what the features are).

    >>> model = load_model("models/fashion")  # doctest: +SKIP
    >>> model.predict(["shoe.png"])  # doctest: +SKIP
    array(['sneaker'], dtype='<U11')
    """
    path = Path(model_dir)
    config = read_config(path)
    try:
        head_cfg = config["head"]
        head_cls = HEADS[head_cfg["kind"]]
        head = head_cls(**head_cfg["params"])
        state = load_file(str(path / WEIGHTS))
        head.load_state(state, config["classes"])
        extractor = FeatureExtractor(**config["extractor"], **extractor_overrides)
    except FileNotFoundError:
        raise ModelDirError(f"{path} has no {WEIGHTS}; the save was incomplete, fit again") from None
    except (KeyError, TypeError) as exc:
        raise ModelDirError(f"{path / CONFIG} is incomplete or from another version ({exc!r}); fit again") from None
    except Exception as exc:  # safetensors raises its own error types for broken files
        raise ModelDirError(f"cannot read {path / WEIGHTS}: {exc}; the save was broken, fit again") from None
    extractor.layers_ = list(config.get("layers", []))
    extractor.slices_ = {k: slice(a, b) for k, (a, b) in config.get("slices", {}).items()}
    return make_model(extractor, head)


def _parts(model: Pipeline) -> tuple[FeatureExtractor, Head]:
    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        raise ModelDirError("save_model expects Pipeline([('features', FeatureExtractor), ('head', Head)])")
    extractor, head = model.steps[0][1], model.steps[1][1]
    if not isinstance(extractor, FeatureExtractor) or not isinstance(head, Head):
        raise ModelDirError("save_model expects a FeatureExtractor followed by a transfuse head")
    return extractor, head
