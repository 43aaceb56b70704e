"""Seeded, stratified train/test splits."""

from __future__ import annotations

import numpy as np

from transfuse.data.source import Source
from transfuse.errors import DataError


def check_classes(source: Source, minimum: int = 2) -> None:
    """Raise a clear error when a class has fewer than ``minimum`` items."""
    small = {c: n for c, n in source.counts().items() if n < minimum}
    if small:
        listing = ", ".join(f"{c!r} ({n})" for c, n in small.items())
        raise DataError(
            f"class {listing} has fewer than {minimum} examples; each class needs one to train on and "
            f"one to test on: add images or remove the class"
        )
    if len(source.classes) < 2:
        raise DataError(f"need at least 2 classes, found {len(source.classes)}: {source.classes}")


def split_source(source: Source, test_size: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of the train and test items.

    Uses the manifest's ``split`` column when present, else a stratified split with
    ``test_size`` of each class (at least one item per class) held out.

    >>> train, test = split_source(src, test_size=0.2, seed=0)  # doctest: +SKIP
    """
    if source.splits is not None:
        train = [i for i, s in enumerate(source.splits) if s == "train"]
        test = [i for i, s in enumerate(source.splits) if s == "test"]
        if not train or not test:
            raise DataError("the manifest's split column needs both train and test rows")
        missing = set(source.classes) - {source.labels[i] for i in train}
        if missing:
            raise DataError(f"classes {sorted(missing)} have no train rows in the manifest")
        return train, test
    if not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be between 0 and 1, got {test_size}")
    check_classes(source)
    rng = np.random.default_rng(seed)
    labels = np.asarray(source.labels)
    train: list[int] = []
    test: list[int] = []
    for cls in source.classes:
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = min(len(idx) - 1, max(1, int(round(test_size * len(idx)))))
        test.extend(idx[:n_test].tolist())
        train.extend(idx[n_test:].tolist())
    return sorted(train), sorted(test)


def without(source: Source, train: list[int], test: list[int], drop: set[int]) -> tuple[list[int], list[int]]:
    """A split with the items at ``drop`` (unreadable files) left out; the others stay where they
    were, so a broken file never reshuffles the test set. Every class must keep a training item."""
    train = [i for i in train if i not in drop]
    test = [i for i in test if i not in drop]
    lost = sorted(set(source.classes) - {source.labels[i] for i in train})
    if lost:
        raise DataError(f"after leaving out {len(drop)} unreadable files, classes {lost} have no training items "
                        f"left; fix the files or remove the class")
    return train, test
