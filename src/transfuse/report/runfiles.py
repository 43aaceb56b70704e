"""One run directory as the report reads it: whatever of its files exist (a run that stopped
halfway has some of them), never the state of a live process."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfuse.evaluate import MAP, PREDICTIONS

CURVES = "logs/metrics.csv"  # Lightning's CSV log of a fine-tuning run
CURVE_KEYS = ("train_loss", "val_loss", "val_acc", "trainable_groups")

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """``predictions.csv``: the test items, their true and predicted labels, and per-class
    probabilities (``probabilities``) or decision scores, when saved."""

    items: list[str]
    truth: np.ndarray
    predicted: np.ndarray
    classes: list[str]
    scores: np.ndarray | None
    probabilities: bool


@dataclass
class Run:
    """The files of one run directory, read once (missing ones are None or empty)."""

    path: Path
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    predictions: Predictions | None = None
    map: dict | None = None  # {"split", "label", "x", "y"} arrays
    search: dict | None = None
    auto: dict | None = None
    evaluation: dict | None = None  # evaluation.json: the model scored, its config, the data
    curves: dict | None = None  # fine-tuning, per epoch: train_loss, val_loss, val_acc, trainable_groups
    ranking: list[dict] | None = None  # ranking.json rows (transfuse rank --out)
    compare: list[dict] | None = None  # compare.json rows; "run": each method's own Run when it is on disk
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def modality(self) -> str:
        return self.config.get("modality") or self.config.get("data", {}).get("kind") or "image"


def read_run(path: str | Path) -> Run:
    """Read what exists in ``path``; an unreadable file is noted in ``problems``, never raised."""
    from transfuse.errors import DataError

    run = Run(Path(path))
    if not run.path.is_dir():
        raise DataError(f"{run.path} is not a folder; pass the output folder of a fit, finetune, compare or "
                        f"evaluate run")
    for attr, name, reader in FILES:
        value = _read(run, name, reader)
        if value is not None:
            setattr(run, attr, value)
    if run.evaluation:  # an evaluation's folder: the model's own description, and the data it was scored on
        run.config = run.config or {**run.evaluation.get("model_config", {}), "data": run.evaluation.get("data", {}),
                                    "command": run.evaluation.get("command")}
    if run.compare:
        run.compare = [{**row, "run": _method_run(run, row)} for row in run.compare]
    if not (run.config or run.metrics or run.predictions or run.compare or run.ranking):
        raise DataError(f"{run.path} holds none of config.json, metrics.json, predictions.csv, compare.json or "
                        f"ranking.json: not a transfuse run")
    return run


def _method_run(run: Run, row: dict) -> Run | None:
    """One method of a comparison, read from its folder (recorded as given when it ran; looked up
    beside compare.json when the comparison has moved)."""
    for folder in (Path(row.get("model_dir", "")), run.path / Path(row.get("model_dir", "")).name):
        if str(folder) and (folder / "metrics.json").is_file():
            try:
                return read_run(folder)
            except Exception as exc:  # noqa: BLE001  (one unreadable method: the others are still shown)
                run.problems.append(f"{folder}: {exc}")
    return None


def _read(run: Run, name: str, reader):
    """``reader(path)`` of the run's file ``name``; None when it is absent."""
    return _guard(run, name, reader) if (run.path / name).is_file() else None


def _guard(run: Run, name: str, reader):
    try:
        return reader(run.path / name)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        run.problems.append(f"{name}: {type(exc).__name__}: {exc}")
        log.warning("%s/%s could not be read (%s); the report leaves it out", run.path, name, exc)
        return None


def read_predictions(path: Path) -> Predictions:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    if header[:3] != ["item", "true", "predicted"]:
        raise ValueError(f"expected the columns item, true, predicted; got {header[:3]}")
    score_cols = header[3:]
    probabilities = bool(score_cols) and score_cols[0].startswith("p:")
    classes = [c.split(":", 1)[1] for c in score_cols]
    scores = np.asarray([[float(v) for v in r[3:]] for r in body], dtype=float) if score_cols else None
    truth = np.asarray([r[1] for r in body], dtype=object)
    predicted = np.asarray([r[2] for r in body], dtype=object)
    if not classes:
        classes = sorted(set(truth) | set(predicted))
    return Predictions([r[0] for r in body], truth, predicted, classes, scores, probabilities)


def read_map(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {"split": np.asarray([r["split"] for r in rows]), "label": np.asarray([r["label"] for r in rows]),
            "x": np.asarray([float(r["x"]) for r in rows]), "y": np.asarray([float(r["y"]) for r in rows])}


def read_curves(path: Path) -> dict:
    """Per epoch (in order) the last value logged of each of :data:`CURVE_KEYS` (NaN when absent)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs: dict[int, dict] = {}
    for row in rows:
        if not row.get("epoch"):
            continue
        values = epochs.setdefault(int(float(row["epoch"])), {})
        for key in CURVE_KEYS:
            if row.get(key) not in (None, ""):
                values[key] = float(row[key])
    order = sorted(epochs)
    if not order:
        raise ValueError("no epoch rows")
    return {"epoch": [e + 1 for e in order], **{k: [epochs[e].get(k, float("nan")) for e in order] for k in CURVE_KEYS}}


def _read_json(path: Path):
    return json.loads(path.read_text())


FILES = (("config", "config.json", _read_json), ("metrics", "metrics.json", _read_json),
         ("search", "search.json", _read_json), ("auto", "auto.json", _read_json),
         ("evaluation", "evaluation.json", _read_json), ("ranking", "ranking.json", _read_json),
         ("compare", "compare.json", _read_json), ("predictions", PREDICTIONS, read_predictions),
         ("map", MAP, read_map), ("curves", CURVES, read_curves))  # (Run attribute, file, reader)
