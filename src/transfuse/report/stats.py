"""Numbers the report derives from saved predictions: bootstrap intervals, calibration, mistakes."""

from __future__ import annotations

import numpy as np

from transfuse.report.runfiles import Predictions

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_intervals(pred: Predictions, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL,
                        classes: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Percentile intervals of accuracy, balanced accuracy and macro-F1 over ``resamples`` draws of
    the test items with replacement (one confusion matrix per draw, computed in chunks); macro-F1
    averages over ``classes`` (default: the prediction file's), absent ones counting 0."""
    listed = list(classes or pred.classes)
    classes = {c: i for i, c in enumerate(listed)}
    for label in (*pred.truth, *pred.predicted):
        classes.setdefault(label, len(classes))
    k, n = len(classes), len(pred.truth)
    if n == 0:
        return {}
    t = np.asarray([classes[v] for v in pred.truth])
    p = np.asarray([classes[v] for v in pred.predicted])
    rng = np.random.default_rng(seed)
    values: dict[str, list] = {"accuracy": [], "balanced_accuracy": [], "macro_f1": []}
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        codes = t[idx] * k + p[idx] + (np.arange(b) * k * k)[:, None]
        cm = np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k).astype(float)
        hits = np.einsum("bii->bi", cm)
        support, predicted = cm.sum(2), cm.sum(1)
        present = support > 0
        recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
        precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits),
                       where=(precision + recall) > 0)
        values["accuracy"] += list(hits.sum(1) / n)
        values["balanced_accuracy"] += list((recall * present).sum(1) / present.sum(1))
        values["macro_f1"] += list(f1[:, : len(listed)].mean(1))
    tail = (1 - level) / 2 * 100
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for name, v in values.items()}


def calibration(pred: Predictions, bins: int = 10) -> dict | None:
    """Reliability of the top-class probability: per equal-width confidence bin its mean confidence,
    accuracy and count, and the expected calibration error (ECE: the count-weighted mean gap).
    None without probabilities."""
    if pred.scores is None or not pred.probabilities or len(pred.truth) == 0:
        return None
    confidence = pred.scores.max(1)
    chosen = np.asarray(pred.classes, dtype=object)[pred.scores.argmax(1)]
    correct = chosen == pred.truth
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    ece = sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / len(confidence)
    return {"bins": rows, "ece": float(ece)}


def confident_mistakes(pred: Predictions, k: int = 12) -> list[dict]:
    """The ``k`` wrong predictions the model was surest of (highest probability or score of the
    predicted class; in file order without scores): item, true, predicted, confidence."""
    wrong = np.flatnonzero(pred.truth != pred.predicted)
    if pred.scores is not None:
        column = {c: i for i, c in enumerate(pred.classes)}
        sure = np.asarray([pred.scores[i, column[pred.predicted[i]]] if pred.predicted[i] in column else -np.inf
                           for i in wrong])
        wrong = wrong[np.argsort(-sure, kind="stable")]
    out = []
    for i in wrong[:k]:
        row = {"item": pred.items[i], "true": str(pred.truth[i]), "predicted": str(pred.predicted[i])}
        if pred.scores is not None and pred.predicted[i] in pred.classes:
            row["confidence"] = float(pred.scores[i, pred.classes.index(pred.predicted[i])])
        out.append(row)
    return out


def paired_difference(a: Predictions, b: Predictions, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> dict | None:
    """Accuracy of ``a`` minus accuracy of ``b`` on the test items both scored (matched by item),
    with a paired bootstrap interval (the same draws of items for both); None without shared items."""
    def keyed(items: list[str]) -> list[tuple[str, int]]:  # the same text twice is two items
        seen: dict[str, int] = {}
        out = []
        for item in items:
            seen[item] = seen.get(item, 0) + 1
            out.append((item, seen[item]))
        return out

    where = {key: i for i, key in enumerate(keyed(b.items))}
    pairs = [(i, where[key]) for i, key in enumerate(keyed(a.items)) if key in where]
    if not pairs:
        return None
    ia, ib = (np.asarray(x) for x in zip(*pairs))
    diff = (a.truth[ia] == a.predicted[ia]).astype(float) - (b.truth[ib] == b.predicted[ib]).astype(float)
    n = len(diff)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))
    means = np.concatenate([diff[rng.integers(0, n, size=(min(chunk, resamples - s), n))].mean(1)
                            for s in range(0, resamples, chunk)])
    tail = (1 - level) / 2 * 100
    return {"difference": float(diff.mean()), "low": float(np.percentile(means, tail)),
            "high": float(np.percentile(means, 100 - tail)), "n": n}
