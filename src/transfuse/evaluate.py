"""Metrics for a classifier's predictions, as a JSON-ready dict and a printable table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(y_true, y_pred, classes: list[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    >>> m = classification_metrics(["a", "b", "b"], ["a", "b", "a"])
    >>> round(m["accuracy"], 3), m["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = list(classes) if classes is not None else sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            str(c): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "classes": [str(c) for c in labels],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def metrics_table(metrics: dict, title: str = "test metrics"):
    """A rich Table of the summary numbers and per-class precision/recall."""
    from rich.table import Table

    table = Table(title=f"{title} (n={metrics['n']})")
    table.add_column("class")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    table.add_column("f1", justify="right")
    table.add_column("support", justify="right")
    for cls, row in metrics["per_class"].items():
        table.add_row(cls, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.add_section()
    table.add_row("accuracy", "", "", f"{metrics['accuracy']:.3f}", "")
    table.add_row("balanced accuracy", "", "", f"{metrics['balanced_accuracy']:.3f}", "")
    table.add_row("macro F1", "", "", f"{metrics['macro_f1']:.3f}", "")
    return table


def plot_confusion(metrics: dict, path: str | Path, title: str = "confusion matrix") -> Path:
    """Save the confusion matrix of ``metrics`` as a PNG (rows: true class, columns: predicted)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    cm = np.asarray(metrics["confusion_matrix"])
    classes = metrics["classes"]
    size = 2.5 + 0.45 * len(classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {metrics['accuracy']:.3f})")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


PREDICTIONS = "predictions.csv"
MAP = "map.csv"


def item_names(items: list, kind: str) -> list[str]:
    """Items as ``predictions.csv`` records them: texts as they are, files by absolute path (so a
    report rebuilt from another folder still finds them)."""
    return [str(i) if kind == "text" else str(Path(i).resolve()) for i in items]


def write_predictions(path: str | Path, items: list, y_true, y_pred, scores, classes: list[str],
                      probabilities: bool = True) -> Path:
    """The test split's predictions as CSV: ``item, true, predicted`` and one column per class,
    ``p:<class>`` (probabilities) or ``score:<class>`` (decision scores of heads without
    probabilities); ``scores`` may be None. Reports and later analysis read it instead of predicting
    again."""
    import csv
    import io

    from transfuse.atomic import atomic_write_text

    prefix = "p:" if probabilities else "score:"
    scores = None if scores is None else np.asarray(scores, dtype=float)
    if scores is not None and scores.ndim == 1:  # one score for two classes
        scores = np.column_stack([-scores, scores])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["item", "true", "predicted", *([f"{prefix}{c}" for c in classes] if scores is not None else [])])
    for i, (item, t, p) in enumerate(zip(items, y_true, y_pred)):
        writer.writerow([item, t, p, *([f"{v:.6g}" for v in scores[i]] if scores is not None else [])])
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def write_map(path: str | Path, train: np.ndarray, y_train, test: np.ndarray, y_test, seed: int = 0) -> Path:
    """A 2-D PCA map (truncated SVD for sparse rows) of the features a head reads, fitted on the
    training rows given (the caller draws them): ``split, label, x, y`` per row."""
    import csv
    import io

    import scipy.sparse as sp
    from sklearn.decomposition import PCA, TruncatedSVD

    from transfuse.atomic import atomic_write_text

    if not sp.issparse(train):  # TF-IDF rows stay sparse: a truncated SVD reads them as they are
        train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    reducer = (TruncatedSVD if sp.issparse(train) else PCA)(n_components=2, random_state=seed)
    pca = reducer.fit(train) if train.shape[0] > 2 and train.shape[1] > 2 else None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "label", "x", "y"])
    for split, X, y in (("train", train, y_train), ("test", test, y_test)):
        xy = pca.transform(X) if pca is not None else np.zeros((X.shape[0], 2))
        writer.writerows([split, label, f"{a:.5g}", f"{b:.5g}"] for label, (a, b) in zip(y, xy))
    atomic_write_text(path, buffer.getvalue())
    return Path(path)
