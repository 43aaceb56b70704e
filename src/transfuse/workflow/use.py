"""Using a saved model: evaluate it on labelled data, predict items."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.atomic import atomic_write_text
from transfuse.data.fingerprint import digest_id
from transfuse.data.source import Source
from transfuse.errors import CorruptInputError, DataError
from transfuse.evaluate import classification_metrics, item_names
from transfuse.modeldir import TRAINING_ITEMS, is_model_dir, load_data
from transfuse.pipeline import load_model, model_classes, model_modality, pipeline_outputs
from transfuse.workflow.requests import command_line

log = logging.getLogger(__name__)


def evaluate_dir(model_dir: str | Path, source: Source, skip_bad: bool = False, report_dir: str | Path | None = None,
                 **settings) -> dict:
    """Metrics of a saved model on every (readable, with ``skip_bad``) item of a labelled ``source``.

    When some items are ones the model was trained on (it records their digests), the metrics say
    how many (``overlap.seen``) and score the unseen ones separately (``overlap.unseen``): scores
    on training items are optimistic. ``report_dir``: also write the metrics, the predictions, what
    was evaluated (``evaluation.json``) and ``report.html`` there."""
    model = load_model(model_dir, **settings)
    reads = model_modality(model)
    if reads != source.kind:
        raise DataError(f"{model_dir} reads {reads} but the data is {source.kind}; evaluate it on {reads} data")
    classes = [str(c) for c in model_classes(model)]
    unknown = sorted(set(source.labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not classes of the model ({', '.join(classes)}); "
                        f"rename the folders or evaluate on matching data")
    ok, labels, proba = predict_arrays(model, source.items, on_error="skip" if skip_bad else "raise")
    truth = [lab for lab, good in zip(source.labels, ok) if good]
    predicted = [str(p) for p in labels]
    metrics = classification_metrics(truth, predicted, classes=classes)
    metrics["skipped"] = int((~ok).sum())
    readable = [item for item, good in zip(source.items, ok) if good]
    seen = trained_on(model_dir, readable, source.kind)
    if seen is not None:
        if seen.any():
            log.warning("%d of %d items were used to train %s: its scores on them are optimistic; the metrics of "
                        "the %d unseen items are under overlap.unseen", seen.sum(), len(seen), model_dir,
                        (~seen).sum())
            unseen = np.flatnonzero(~seen)
            metrics["overlap"] = {"seen": int(seen.sum()), "unseen": classification_metrics(
                [truth[i] for i in unseen], [predicted[i] for i in unseen], classes=classes) if len(unseen) else None}
    if report_dir is not None:
        _save_evaluation(Path(report_dir), Path(model_dir), source, metrics, readable, truth, predicted, proba, classes)
    return metrics


def _save_evaluation(out: Path, model_dir: Path, source: Source, metrics: dict, items: list, truth: list,
                     predicted: list, proba, classes: list[str]) -> None:
    """An evaluation's folder: metrics.json, predictions.csv, evaluation.json (the model's config and
    what it was scored on; no config.json, so the folder is never taken for a model) and the report."""
    from transfuse.evaluate import PREDICTIONS, write_predictions
    from transfuse.modeldir import METRICS, read_config
    from transfuse.report import try_report

    if is_model_dir(out):
        raise DataError(f"--report {out} is a model directory; choose another folder for the evaluation's report")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    write_predictions(out / PREDICTIONS, item_names(items, source.kind), truth, predicted, proba, classes)
    evaluation = {"model_dir": str(model_dir.resolve()), "model_config": read_config(model_dir),
                  "data": {"name": source.name, "kind": source.kind, "n_items": len(source),
                           "per_class": source.counts()}, "command": command_line()}
    atomic_write_text(out / "evaluation.json", json.dumps(evaluation, indent=2, default=str) + "\n")
    try_report(out)


def trained_on(model_dir: str | Path, items: list, kind: str) -> np.ndarray | None:
    """Which of ``items`` the model in ``model_dir`` was trained on (by the content digests it
    records); None for a model that records none."""
    digests = load_data(model_dir).get(TRAINING_ITEMS)
    if digests is None:
        return None
    return np.isin(np.asarray([digest_id(item, kind) for item in items], dtype=np.uint64), digests)


def predict_arrays(model, items: list[str], on_error: str = "raise") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(readable mask, labels of the readable items, their probabilities or None)`` for a probe
    pipeline or a fine-tuned model; unreadable files raise unless ``on_error="skip"``."""
    if isinstance(model, Pipeline):
        return pipeline_outputs(model, items, on_error)
    ok, proba = model.scores(items)
    if not ok.all() and on_error == "raise":
        raise CorruptInputError.unreadable([p for p, good in zip(items, ok) if not good], len(items), cached=False)
    return ok, model.classes_[proba.argmax(1)], proba if getattr(model, "has_proba", True) else None


def predict_paths(model, items: list[str], on_error: str = "raise") -> list[dict]:
    """One record per input: ``path`` (``text`` for a text model), ``label`` and per-class
    ``probabilities`` (when the model has them)."""
    key = "text" if model_modality(model) == "text" else "path"
    ok, labels, proba = predict_arrays(model, items, on_error)
    classes = model_classes(model)
    records: list[dict] = [{key: p, "label": None, "error": "unreadable"} for p in items]
    for j, i in enumerate(np.flatnonzero(ok)):
        rec = {key: items[i], "label": str(labels[j])}
        if proba is not None:
            rec["probabilities"] = {str(c): float(p) for c, p in zip(classes, proba[j])}
        records[i] = rec
    return records
