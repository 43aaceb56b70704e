"""End-to-end jobs behind the CLI: fit (split, extract, train, score, save), evaluate, predict."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.data.source import Source
from transfuse.data.split import split_source
from transfuse.errors import CorruptInputError, DataError
from transfuse.evaluate import classification_metrics, plot_confusion
from transfuse.extract import FeatureExtractor, extract_features
from transfuse.heads import make_head
from transfuse.pipeline import load_model, make_model, save_model

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` produced: the fitted pipeline, its test metrics and where it was saved."""

    model: Pipeline
    metrics: dict
    out_dir: Path | None
    n_train: int
    n_test: int
    skipped: list[str]


def default_out_dir(source: Source, backbone: str, head: str) -> Path:
    """``transfuse-models/<data>-<backbone>-<head>-<timestamp>`` under the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("transfuse-models") / f"{source.name}-{backbone.replace(':', '_')}-{head}-{stamp}"


def drop_unreadable(source: Source, extractor: FeatureExtractor, skip_bad: bool) -> tuple[Source, np.ndarray, list[str]]:
    """Extract features of every item (filling the cache); drop or reject undecodable ones."""
    params = {k: v for k, v in extractor.get_params().items() if k != "on_error"}
    feats = extract_features(source.items, on_error="skip", **params)
    bad = [source.items[i] for i in feats.failed]
    if bad and not skip_bad:
        listing = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CorruptInputError(
            f"{len(bad)} of {len(source)} files could not be read as images: {listing}; fix or remove them, "
            f"or pass --skip-bad to leave them out (features of the others are cached)", bad)
    if bad:
        log.warning("skipped %d unreadable files: %s", len(bad), ", ".join(bad[:5]))
    keep = [i for i in range(len(source)) if i not in set(feats.failed)]
    extractor._remember(feats)
    return source.subset(keep), feats.X[keep], bad


def fit_source(source: Source, *, backbone: str = "efficientnet_lite0", layers: str | list[str] | None = None,
               pooling: str = "avg", weights: str = "pretrained", head: str = "logreg",
               head_params: dict | None = None, test_size: float = 0.2, seed: int = 0,
               skip_bad: bool = False, out_dir: str | Path | None = None, save: bool = True,
               batch_size: int | None = None, num_workers: int | None = None, device: str | None = None,
               cache: bool | str = True) -> FitResult:
    """Split ``source``, extract features, train a head, score it on the test split and save it.

    >>> res = fit_source(load_source("examples/fashion"))  # doctest: +SKIP
    >>> round(res.metrics["accuracy"], 2), res.out_dir  # doctest: +SKIP
    """
    head_est = make_head(head, **(head_params or {}))
    extractor = FeatureExtractor(backbone=backbone, layers=layers, pooling=pooling, weights=weights,
                                 batch_size=batch_size, num_workers=num_workers, device=device, cache=cache)
    source, X, skipped = drop_unreadable(source, extractor, skip_bad)
    train, test = split_source(source, test_size=test_size, seed=seed)
    y = np.asarray(source.labels)
    log.info("training %s head on %d items, testing on %d", head, len(train), len(test))
    head_est.fit(X[train], y[train])
    metrics = classification_metrics(y[test], head_est.predict(X[test]), classes=[str(c) for c in head_est.classes_])
    metrics["split"] = {"train": len(train), "test": len(test), "seed": seed,
                        "test_size": test_size if source.splits is None else "manifest"}
    model = make_model(extractor, head_est)
    saved = None
    if save:
        saved = save_model(model, out_dir or default_out_dir(source, backbone, head), metrics=metrics,
                           extra={"data": {"name": source.name, "n_items": len(source), "skipped": len(skipped)}})
        plot_confusion(metrics, saved / "confusion_matrix.png", title=f"{backbone} + {head}, test split")
    return FitResult(model=model, metrics=metrics, out_dir=saved, n_train=len(train), n_test=len(test), skipped=skipped)


def evaluate_dir(model_dir: str | Path, source: Source, **overrides) -> dict:
    """Metrics of a saved model on every item of a labelled ``source``."""
    model = load_model(model_dir, **overrides)
    classes = [str(c) for c in model.named_steps["head"].classes_]
    unknown = sorted(set(source.labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not classes of the model ({', '.join(classes)}); "
                        f"rename the folders or evaluate on matching data")
    pred = model.predict(source.items)
    return classification_metrics(source.labels, pred, classes=classes)


def predict_paths(model: Pipeline, paths: list[str], on_error: str = "raise") -> list[dict]:
    """One record per input: ``path``, ``label`` and per-class ``probabilities`` (when the head has them)."""
    extractor, head = model.named_steps["features"], model.named_steps["head"]
    extractor.set_params(on_error=on_error)
    X = extractor.transform(paths)
    ok = ~np.isnan(X).any(axis=1)
    records: list[dict] = [{"path": p, "label": None, "error": "unreadable"} for p in paths]
    if ok.any():
        labels = head.predict(X[ok])
        proba = head.predict_proba(X[ok]) if hasattr(head, "predict_proba") else None
        for j, i in enumerate(np.flatnonzero(ok)):
            rec = {"path": paths[i], "label": str(labels[j])}
            if proba is not None:
                rec["probabilities"] = {str(c): float(p) for c, p in zip(head.classes_, proba[j])}
            records[i] = rec
    return records
