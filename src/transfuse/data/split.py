"""Seeded, stratified train/test splits, with each item's content in one split only."""

from __future__ import annotations

import logging

import numpy as np

from transfuse.data.fingerprint import item_digest
from transfuse.data.source import Source
from transfuse.errors import DataError

log = logging.getLogger(__name__)


def unique_positions(source: Source) -> list[int]:
    """Positions of the items to split: a content (a file's bytes, a text) that appears more than
    once is kept once, so it cannot sit in both splits (a warning says how many copies were left
    out); the same content under two labels is an error. Unreadable files are kept (extraction
    reports them)."""
    first: dict[str, int] = {}
    keep, copies, conflicts = [], [], []
    for i, item in enumerate(source.items):
        try:
            digest = item_digest(item, source.kind)
        except DataError:
            keep.append(i)
            continue
        j = first.setdefault(digest, i)
        if j == i:
            keep.append(i)
        elif source.labels[j] == source.labels[i]:
            copies.append(i)
        else:
            conflicts.append((j, i))
    if conflicts:
        shown = "; ".join(f"{_show(source.items[j], source.kind)} ({source.labels[j]}) = {_show(source.items[i], source.kind)} "
                          f"({source.labels[i]})" for j, i in conflicts[:3])
        raise DataError(f"{len(conflicts)} items have the same content as an item of another class: {shown}"
                        f"{' ...' if len(conflicts) > 3 else ''}; fix their labels or remove the copies")
    if copies:
        log.warning("left out %d duplicate items (the same content as another item of the class, which could "
                    "otherwise land in both splits): %s", len(copies),
                    ", ".join(_show(source.items[i], source.kind) for i in copies[:5]))
    return keep


def _show(item: str, kind: str) -> str:
    """A path by its end (the folder and file that tell items apart), a text by its start."""
    if len(item) <= 60:
        return item
    return item[:57] + "..." if kind == "text" else "..." + item[-57:]


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
    positions = unique_positions(source)
    if source.splits is not None:
        train = [i for i in positions if source.splits[i] == "train"]
        test = [i for i in positions if source.splits[i] == "test"]
        if not train or not test:
            raise DataError("the manifest's split column needs both train and test rows")
        missing = set(source.classes) - {source.labels[i] for i in train}
        if missing:
            raise DataError(f"classes {sorted(missing)} have no train rows in the manifest")
        return train, test
    if not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be between 0 and 1, got {test_size}")
    if len(positions) < len(source):
        source = source.subset(positions)  # the classes are checked on what will be split
    check_classes(source)
    rng = np.random.default_rng(seed)
    labels = np.asarray(source.labels)
    where = np.asarray(positions)
    train: list[int] = []
    test: list[int] = []
    for cls in source.classes:
        idx = where[np.flatnonzero(labels == cls)]
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
    if not test:
        raise DataError(f"after leaving out {len(drop)} unreadable files, no test items are left; fix the files, "
                        f"or add items")
    untested = sorted(set(source.classes) - {source.labels[i] for i in test})
    if untested:
        log.warning("after leaving out %d unreadable files, classes %s have no test items: the test metrics do not "
                    "cover them", len(drop), untested)
    return train, test
