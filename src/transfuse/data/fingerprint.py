"""Content fingerprints: the cache keys items by what they contain, not where they live."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transfuse.errors import DataError


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex encoded.

    >>> file_digest("examples/fashion/bag/00000.png")[:8]  # doctest: +SKIP
    '3fa1c2d4'
    """
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}; check its permissions") from None
