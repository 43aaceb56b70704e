"""Settings of every extraction inside a ``with`` block, for callers far above it.

A command sets them once (``auto`` its trials' deadline, the CLI's ``--cluster`` and
``--features-in``) and every :func:`~transfuse.extract.extract_features` call underneath, through
featurizers, searches and rankings, honours them; nothing in between passes them along, and a
saved model never records them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os

from transfuse.cluster import Cluster

DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("extraction_deadline", default=None)
CLUSTER: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar("extraction_cluster", default=None)
FEATURES_IN: contextvars.ContextVar[str | None] = contextvars.ContextVar("extraction_features_in", default=None)


@contextlib.contextmanager
def _setting(var: contextvars.ContextVar, value):
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def deadline(at: float | None):
    """Extraction inside the block stops after the batch that passes ``at`` (``time.monotonic()``),
    keeping what it computed in the cache, and raises :class:`~transfuse.errors.OutOfTime` (``auto``
    gives its trials a deadline this way; nothing else does)."""
    return _setting(DEADLINE, at)


def on_cluster(address: str | Cluster | None, workers: int | None = None):
    """Items missing from the cache are extracted on a Ray cluster (``ray`` or ``ray:HOST:PORT``;
    see :mod:`transfuse.cluster`) by ``workers`` actors (default: one per CPU, or per GPU) instead
    of in this process; None: here.

    >>> with on_cluster("ray"):  # doctest: +SKIP
    ...     extract_features(paths)  # rows come back to this process and into its cache
    """
    if isinstance(address, str):
        address = Cluster.parse(address, workers)
    return _setting(CLUSTER, address)


def features_in(path: str | os.PathLike | None):
    """Rows of a Parquet feature data set (written by ``transfuse extract --features-out``) are
    read from it instead of being extracted, for every item and tap it holds with the same
    backbone, weights, preprocessing and pooling."""
    return _setting(FEATURES_IN, None if path is None else os.fspath(path))
