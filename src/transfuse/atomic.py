"""Atomic file writes: write a temporary file beside the target, fsync, rename over it."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # read it the only way there is (set, then put back), once per process
    os.umask(mask)
    return mask


def permissions(mode: int = 0o666) -> int:
    """``mode`` as the umask allows (what ``open``/``mkdir`` would give): files and folders made
    through temporary names (private by default) end up shared like any other the user makes."""
    return mode & ~_umask()


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only if the block finishes without error; it gets
    the permissions the umask gives new files.

    >>> with atomic_writer("out.json") as fh:  # doctest: +SKIP
    ...     fh.write(b"{}")
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, permissions(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block, so processes
    that read-modify-write or build the same file take turns."""
    import fcntl

    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_writer(path) as fh:
        fh.write(text.encode("utf-8"))
