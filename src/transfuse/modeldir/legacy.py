"""Model directories of formats 1-3, converted in memory into the format-4 list of parts.

Format 1 saved a feature extractor and a head (``head.safetensors``, head arrays unprefixed);
format 2 added fusion/selection steps (arrays ``<step>.<name>``) and fine-tuned networks
(``model.safetensors``, the torch state dict); format 3 pinned the extraction engine and added
TF-IDF (``features.idf`` and ``vocabulary.json``). Nothing on disk is changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from transfuse.errors import ModelDirError
from transfuse.modeldir.files import read_arrays
from transfuse.parts import encode_strings

_BEFORE_ENGINES = {"runtime": "torch", "precision": "fp32"}  # what models saved before format 3 ran on
_TFIDF = "tfidf"  # the backbone name format 3 stored for a TF-IDF first step
# The arrays formats 1-3 wrote per kind (they did not list them), so a damaged old file is a clear error.
_LINEAR = ("mean", "scale", "coef", "intercept")
_HEAD_ARRAYS = {"knn": ("mean", "scale", "train", "train_y"), "mlp": ("mean", "scale", "w0", "b0", "w1", "b1")}


def _step_arrays(kind: str, meta: dict) -> list[str]:
    blocks = range(len(meta.get("kept_blocks", {})))
    projections = [f"{a}.{i}" for i in blocks for a in ("proj", "bias")]
    return {"concat": ["mean", "scale"], "scalar-mix": ["mean", "scale", "weights"],
            "weighted": ["mean", "scale", *projections, "weights"],
            "gated": ["mean", "scale", *projections, "gate", "gate_bias"],
            "pca": ["mean", "components"]}.get(kind, ["index"])  # variance, kbest, l1 keep column indices


def migrate(config: dict, folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(format-4 config, arrays named <part>.<array>)`` of an older model directory."""
    try:
        if config.get("kind") == "finetuned":
            return _finetuned(config, folder)
        return _probe(config, folder)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelDirError(f"{folder / 'config.json'} is incomplete or from another version ({exc!r}); "
                            f"fit again") from None


def _finetuned(config: dict, folder: Path):
    state = read_arrays(folder / "model.safetensors")
    meta = {"finetune": config["finetune"], "classes": config["classes"], "modality": config.get("modality", "image")}
    part = {"name": "model", "kind": "finetuned", "meta": meta, "arrays": sorted(state)}
    return {**config, "parts": [part]}, {f"model.{k}": v for k, v in state.items()}


def _probe(config: dict, folder: Path):
    state = read_arrays(folder / "head.safetensors")
    extractor = dict(config["extractor"])
    arrays: dict[str, np.ndarray] = {}
    if extractor.get("backbone") == _TFIDF:
        try:
            vocabulary = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelDirError(f"{folder} has no vocabulary.json; the save was incomplete, fit again") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{folder / 'vocabulary.json'} is broken ({exc}); fit again") from None
        arrays = {"features.idf": state["features.idf"], "features.vocabulary": encode_strings(vocabulary)}
        params = {k: v for k, v in extractor.items() if k != "backbone"}
        features = {"name": "features", "kind": "tfidf", "meta": {"params": params}, "arrays": ["idf", "vocabulary"]}
    else:
        fitted = {"layers": config["layers"], "slices": config["slices"], "weights_id": config.get("weights_id")}
        features = {"name": "features", "kind": "extractor", "arrays": [],
                    "meta": {"params": {**_BEFORE_ENGINES, **extractor}, "fitted": fitted}}
    steps = []
    for step in config.get("steps", []):
        prefix = f"{step['name']}."
        arrays.update({k: v for k, v in state.items() if k.startswith(prefix)})
        steps.append({"name": step["name"], "kind": step["kind"], "arrays": _step_arrays(step["kind"], step["meta"]),
                      "meta": {"params": step["params"], "fitted": step["meta"]}})
    arrays.update({f"head.{k}": v for k, v in state.items() if "." not in k})
    kind = config["head"]["kind"]
    head = {"name": "head", "kind": kind, "arrays": list(_HEAD_ARRAYS.get(kind, _LINEAR)),
            "meta": {"params": config["head"]["params"], "classes": config["classes"]}}
    return {**config, "parts": [features, *steps, head]}, arrays
