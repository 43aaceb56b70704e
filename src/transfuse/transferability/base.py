"""What every transferability score shares: its declaration, and the checks of its inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from transfuse.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    """A transferability score as data: ``fn(features, labels, **options) -> float``, higher is better.

    ``needs`` says what it reads besides the labels: ``features`` (a tap's pooled features) or
    ``source_probs`` (the source network's class probabilities per item, e.g. its ``logits`` tap
    after a softmax: LEEP, NCE)."""

    name: str
    fn: Callable[..., float]
    needs: str = "features"
    description: str = ""
    reference: str = ""


def check_inputs(values, labels, what: str = "features") -> tuple[np.ndarray, np.ndarray, int]:
    """``(values as float64 (n, d), labels as codes 0..k-1, k)``, or a clear error: mismatched
    lengths, fewer than two classes, a class with one item, NaN or infinite values."""
    X = np.asarray(values, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    y_raw = np.asarray(labels)
    if X.ndim != 2 or len(X) != len(y_raw):
        raise DataError(f"{what} must be (items, dims) with one label per item; got {X.shape} and {len(y_raw)} labels")
    if not np.isfinite(X).all():
        raise DataError(f"{what} contain NaN or infinite values; extract them again or drop those items")
    classes, y = np.unique(y_raw, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"a transferability score needs at least two classes; got {len(classes)}")
    counts = np.bincount(y)
    if counts.min() < 2:
        raise DataError(f"class {classes[counts.argmin()]!r} has {counts.min()} item; every class needs two or more")
    return X, y, len(classes)
