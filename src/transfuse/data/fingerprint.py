"""Content fingerprints: the cache keys items by what they contain, not where they live."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from transfuse.errors import DataError


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex encoded.

    >>> file_digest("examples/fashion/bag/00000.png")[:8]  # doctest: +SKIP
    '3fa1c2d4'
    """
    try:
        stat = os.stat(path)
        return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {read_problem(exc)}") from None


@functools.lru_cache(maxsize=1 << 20)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """Hashed once per process while the file is unchanged (splitting, extracting, saving and
    evaluating all need the digests of the same files)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def read_problem(exc: OSError) -> str:
    """What went wrong reading a file, and what to do, by the error's cause."""
    hint = {errno.ELOOP: "it is a symbolic link that points back to itself; replace it with the file",
            errno.EACCES: "permission denied; check its permissions", errno.EPERM: "not permitted; check its permissions",
            errno.EISDIR: "it is a folder, not a file", errno.EIO: "the disk reported an input/output error"}
    return hint.get(exc.errno, f"{exc.strerror or exc}")


def text_digest(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes (prefixed, so a text never collides with a file's bytes)."""
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def item_digest(item: str, modality: str) -> str:
    """The content fingerprint of one item: file bytes for images and audio, the text itself for text.

    >>> item_digest("a short review", "text")[:8]  # doctest: +SKIP
    """
    return text_digest(item) if modality == "text" else file_digest(item)


def digest_id(item: str, modality: str) -> int:
    """The first 64 bits of an item's content digest: how a saved model records its training items."""
    return int(item_digest(item, modality)[:16], 16)


def digest_ids(items: list[str], modality: str) -> np.ndarray:
    """:func:`digest_id` of every readable item, unique, as uint64 (to tell training items from new data)."""
    ids = []
    for item in items:
        try:
            ids.append(digest_id(item, modality))
        except DataError:
            continue
    return np.unique(np.asarray(ids, dtype=np.uint64))
