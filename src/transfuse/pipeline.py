"""The saved artefact: a directory with ``config.json``, ``head.safetensors`` and ``metrics.json``.

A model is an sklearn ``Pipeline([("features", FeatureExtractor), ("head", Head)])``.
``save_model`` writes it without pickle (configuration in JSON, learned numbers in
safetensors) into a temporary folder that replaces the target in one rename;
``load_model`` rebuilds it and predicts exactly as before saving.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.pipeline import Pipeline

from transfuse.atomic import atomic_write_text
from transfuse.backbones import get_spec
from transfuse.backbones.tfidf import TfidfFeatures
from transfuse.errors import ModelDirError, TransfuseError
from transfuse.extract import FeatureExtractor, backbone_list
from transfuse.fusion import FUSIONS
from transfuse.heads import HEADS, Head
from transfuse.selection import SELECTORS
from transfuse.steps import Step

STEPS: dict[str, type[Step]] = {**FUSIONS, **SELECTORS}

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: extraction engines, tfidf; 2: fusion/selection steps, fine-tuned models; 1: probes
CONFIG = "config.json"
WEIGHTS = "head.safetensors"
METRICS = "metrics.json"
VOCABULARY = "vocabulary.json"  # the terms of a tfidf model, in column order
_EXTRACTOR_PARAMS = ("backbone", "layers", "pooling", "weights", "batch_size", "long_text", "runtime", "precision")
_BEFORE_RUNTIMES = {"runtime": "torch", "precision": "fp32"}  # what models saved without these were trained on


def make_model(extractor: FeatureExtractor, head: Head, steps: list[tuple[str, Step]] | None = None) -> Pipeline:
    """paths -> features -> [fusion and selection steps] -> head."""
    return Pipeline([("features", extractor), *(steps or []), ("head", head)])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("transfuse", "torch", "timm", "scikit-learn", "numpy", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _json_value(value):
    """numpy scalars -> plain Python values for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def save_model(model: Pipeline, out_dir: str | Path, metrics: dict | None = None, extra: dict | None = None,
               files: dict | None = None) -> Path:
    """Save a fitted pipeline to ``out_dir`` and return its path.

    The directory is written beside the target and renamed into place, so an existing model
    there is replaced whole or not at all. ``files`` maps extra file names to callables
    ``fn(path)`` that write them (plots); their failures are logged, not raised.

    >>> save_model(model, "models/fashion")  # doctest: +SKIP
    PosixPath('models/fashion')
    """
    extractor, steps, head = _parts(model)
    fitted_first = isinstance(extractor, TfidfFeatures)
    if not hasattr(head, "state_") or any(not hasattr(st, "state_") for _, st in steps) or \
            (fitted_first and not hasattr(extractor, "state_")):
        raise ModelDirError("the model is not fitted yet; call fit before saving")
    out = Path(out_dir)
    params = extractor.get_params()
    if fitted_first:  # learned from the training texts: its parameters, and its state saved below
        extractor_cfg = {"backbone": extractor.backbone, **params}
        weights_id = extractor.backbone
    else:
        weights = params["weights"]
        if weights not in ("pretrained", "random"):
            weights = str(Path(weights).resolve())
        extractor_cfg = {k: params[k] for k in _EXTRACTOR_PARAMS} | {"weights": weights}
        # the engines the features were computed with, kept for predict (not the "auto" request)
        extractor_cfg["engines"] = getattr(extractor, "engines_", None) or params["engines"]
        weights_id = _weights_ids(params["backbone"], weights)
    config = {
        "format_version": FORMAT_VERSION,
        "kind": "feature-probe",
        "extractor": extractor_cfg,
        "weights_id": weights_id,
        "layers": list(getattr(extractor, "layers_", []) or []),
        "slices": {k: [s.start, s.stop] for k, s in getattr(extractor, "slices_", {}).items()},
        "steps": [{"name": name, "kind": st.kind, "params": st.get_params(), "meta": st.meta_} for name, st in steps],
        "head": {"kind": head.kind, "params": head.get_params()},
        "classes": [_json_value(c) for c in head.classes_],
        "versions": _versions(),
        **(extra or {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        arrays = dict(head.state_)
        arrays.update({f"{name}.{k}": v for name, st in steps for k, v in st.state_.items()})
        if fitted_first:
            arrays.update({f"features.{k}": v for k, v in extractor.state_.items()})
            atomic_write_text(tmp / VOCABULARY, json.dumps(extractor.meta_["vocabulary"], ensure_ascii=False) + "\n")
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / WEIGHTS))
        if metrics is not None:
            atomic_write_text(tmp / METRICS, json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=2) + "\n")
        for name, write in (files or {}).items():
            try:
                write(tmp / name)
            except Exception as exc:  # a plot must never lose a trained model
                log.warning("could not write %s: %s", name, exc)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            out.rename(old / "model")
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int):
        raise ModelDirError(f"{path / CONFIG} has no format_version; it was not written by transfuse")
    if version > FORMAT_VERSION:
        saved_by = config.get("versions", {}).get("transfuse", "a newer transfuse")
        raise ModelDirError(
            f"{path} was saved by transfuse {saved_by} in model format {version}; this transfuse reads "
            f"format {FORMAT_VERSION} and older: upgrade with `pip install -U transfuse`"
        )
    return config


def load_model(model_dir: str | Path, **extractor_overrides):
    """Load a model directory saved by :func:`save_model` (a Pipeline), or by ``transfuse finetune``
    (a :class:`~transfuse.finetune.train.FinetunedModel`, which ignores the overrides).

    ``extractor_overrides`` change run-time settings such as ``device``, ``num_workers``,
    ``batch_size`` or ``cache`` (never what the features are). Features are computed with the
    engine the model was trained with when it can run here; ``runtime``/``precision`` pick
    another (its features agree with fp32 to a cosine of at least 0.99).

    >>> model = load_model("models/fashion")  # doctest: +SKIP
    >>> model.predict(["shoe.png"])  # doctest: +SKIP
    array(['sneaker'], dtype='<U11')
    """
    path = Path(model_dir)
    config = read_config(path)
    if config.get("kind") == "finetuned":  # parameter-based transfer: a whole network, see transfuse.finetune
        from transfuse.finetune.train import FinetunedModel

        return FinetunedModel.load(path, config)
    broken = f"{path / CONFIG} is incomplete or from another version"
    try:
        head_cfg = config["head"]
        head_cls = HEADS[head_cfg["kind"]]
        head = head_cls(**head_cfg["params"])
        fitted_first = config["extractor"]["backbone"] == TfidfFeatures.backbone
        if fitted_first:  # nothing to override: no device, cache or batches
            extractor = TfidfFeatures(**{k: v for k, v in config["extractor"].items() if k != "backbone"})
        else:
            if {"runtime", "precision"} & set(extractor_overrides):  # another engine asked for: unpin
                extractor_overrides = {"engines": None, **extractor_overrides}
            extractor = FeatureExtractor(**{**_BEFORE_RUNTIMES, **config["extractor"], **extractor_overrides})
        classes, layers, slices = config["classes"], config["layers"], config["slices"]
        steps = [(st["name"], STEPS[st["kind"]](**st["params"])) for st in config.get("steps", [])]
    except (KeyError, TypeError) as exc:
        raise ModelDirError(f"{broken} ({exc!r}); fit again") from None
    try:
        state = load_file(str(path / WEIGHTS))
    except FileNotFoundError:
        raise ModelDirError(f"{path} has no {WEIGHTS}; the save was incomplete, fit again") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot read {path / WEIGHTS} ({exc}); the save was broken, fit again") from None
    lacking = sorted(set(head.state_keys) - set(state))
    if lacking:
        raise ModelDirError(f"{path / WEIGHTS} lacks {', '.join(lacking)}; the save was broken, fit again")
    head.load_state({k: v for k, v in state.items() if "." not in k}, classes)
    try:
        for (name, step), saved in zip(steps, config.get("steps", [])):
            prefix = f"{name}."
            step.load_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, saved["meta"])
            step.check_state()
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(f"{broken}: step {name!r} cannot be restored ({exc!r}); fit again") from None
    if fitted_first:
        _load_vocabulary(extractor, state, path)
        return make_model(extractor, head, steps)
    _check_weights(config, extractor, path)
    extractor.layers_ = list(layers)
    extractor.slices_ = {k: slice(a, b) for k, (a, b) in slices.items()}
    extractor.n_features_out_ = max((s.stop for s in extractor.slices_.values()), default=0)
    extractor.feature_names_out_ = np.asarray(
        [f"{tap}:{i}" for tap, s in extractor.slices_.items() for i in range(s.stop - s.start)], dtype=object)
    return make_model(extractor, head, steps)


def _load_vocabulary(extractor: TfidfFeatures, state: dict[str, np.ndarray], path: Path) -> None:
    try:
        vocabulary = json.loads((path / VOCABULARY).read_text(encoding="utf-8"))
        extractor.load_state({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")},
                             {"vocabulary": vocabulary})
    except FileNotFoundError:
        raise ModelDirError(f"{path} has no {VOCABULARY}; the save was incomplete, fit again") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelDirError(f"{path / VOCABULARY} does not match {WEIGHTS} ({exc}); the save was broken, "
                            f"fit again") from None


def model_modality(model) -> str:
    """What a loaded model reads: "image", "text" or "audio" (its first backbone's modality)."""
    if isinstance(model, Pipeline):
        return get_spec(backbone_list(model.named_steps["features"].backbone)[0]).modality
    return model.modality  # a fine-tuned model


def _weights_ids(backbone: str, weights: str) -> str:
    """Weights identity of one backbone, or ``a=id_a;b=id_b`` for several."""
    names = backbone_list(backbone)
    if len(names) == 1:
        return get_spec(names[0]).weights_identity(weights)
    return ";".join(f"{n}={get_spec(n).weights_identity(weights)}" for n in names)


def _check_weights(config: dict, extractor: FeatureExtractor, path: Path) -> None:
    """Refuse to predict with backbone weights other than those the head was trained on."""
    saved = config.get("weights_id")
    if saved is None:
        return
    try:
        current = _weights_ids(extractor.backbone, extractor.weights)
    except TransfuseError as exc:
        raise ModelDirError(f"{path}: the backbone weights it was trained with are not available ({exc})") from None
    if current != saved:
        raise ModelDirError(f"{path} was trained on backbone weights {saved}, but {current} is installed now; "
                            f"install the matching weights or fit again")


def _parts(model: Pipeline) -> tuple[FeatureExtractor, list[tuple[str, Step]], Head]:
    usage = ("save_model expects Pipeline([('features', FeatureExtractor or TfidfFeatures), (name, fusion or selection "
             "step)..., ('head', Head)]) built from transfuse classes")
    if not isinstance(model, Pipeline) or len(model.steps) < 2:
        raise ModelDirError(usage)
    extractor, head = model.steps[0][1], model.steps[-1][1]
    middle = list(model.steps[1:-1])
    if (not isinstance(extractor, (FeatureExtractor, TfidfFeatures)) or not isinstance(head, Head)
            or not all(isinstance(st, Step) and "." not in name for name, st in middle)):
        raise ModelDirError(usage)
    return extractor, middle, head
