"""Items that live in memory (PIL images, numpy arrays, torch tensors, the bytes of a file) as the
files the rest of transfuse reads.

Everything downstream (decoding in loader workers, content digests, the feature cache) works on
files. An in-memory image is written once as a PNG (lossless, and byte-identical for the same
pixels), the bytes of a file as they are, into a folder that lives while the features are
computed. The feature cache keys items by content, so the same picture passed again is a cache hit
whatever it was called.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from transfuse.errors import DataError

_AUDIO_MAGIC = {b"RIFF": ".wav", b"fLaC": ".flac", b"OggS": ".ogg", b"ID3": ".mp3", b"FORM": ".aiff"}
TAKES = {"image": "file paths, PIL images, numpy arrays (H x W, or H x W x 1/3/4; uint8, or floats in [0, 1]), "
                  "torch tensors (C x H x W or H x W x C) or the bytes of an image file",
         "audio": "file paths or the bytes of an audio file",
         "sequence": "paths of .npy files, or numpy arrays of shape (frames, width)",
         "text": "strings"}


def as_list(X) -> list:
    """The items of ``X``: a list or tuple as it is; a numpy array or tensor along its first axis
    (an array of N images is N items); anything else one by one. A lone string is one item."""
    if isinstance(X, (str, bytes, os.PathLike)):
        return [X]
    if isinstance(X, (list, tuple)):
        return list(X)
    if isinstance(X, np.ndarray) and X.dtype != object:
        return list(X) if X.ndim >= 1 else [X.item()]
    if _is_tensor(X):
        return list(X)
    return list(np.asarray(X, dtype=object).ravel()) if isinstance(X, np.ndarray) else list(X)


def in_memory(items: list) -> bool:
    """Whether any item is not a path or a text."""
    return any(not isinstance(item, (str, os.PathLike)) for item in items)


@contextlib.contextmanager
def item_files(X, modality: str) -> Iterator[list[str]]:
    """``X`` as a list of strings (paths, or texts for a text model), writing in-memory items to a
    temporary folder that is removed on exit.

    >>> with item_files(["a.png", np.zeros((4, 4, 3), np.uint8)], "image") as paths:
    ...     paths[0], paths[1].endswith(".png")
    ('a.png', True)
    """
    items = as_list(X)
    if not in_memory(items):
        yield [str(i) for i in items]
        return
    if modality == "text":
        bad = next(i for i in items if not isinstance(i, str))
        raise DataError(f"a text model takes {TAKES['text']}; got a {type(bad).__name__}")
    with tempfile.TemporaryDirectory(prefix="transfuse-items-") as folder:
        yield [str(item) if isinstance(item, (str, os.PathLike)) else _write(item, modality, Path(folder), i)
               for i, item in enumerate(items)]


def _write(item, modality: str, folder: Path, index: int) -> str:
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        path = folder / f"item-{index}{_suffix(data, modality)}"
        path.write_bytes(data)
        return str(path)
    if modality == "sequence" and isinstance(item, np.ndarray):
        path = folder / f"item-{index}.npy"
        np.save(path, np.ascontiguousarray(item, dtype=np.float32), allow_pickle=False)
        return str(path)
    if modality != "image":
        raise DataError(f"a {modality} model takes {TAKES.get(modality, 'file paths')}; got a {type(item).__name__}")
    path = folder / f"item-{index}.png"
    to_pil(item).save(path, format="PNG")
    return str(path)


def to_pil(item):
    """A PIL image of an in-memory image (see :data:`TAKES`), or a clear error saying what is taken."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item if item.mode in ("RGB", "RGBA", "L") else item.convert("RGB")
    if _is_tensor(item):
        item = item.detach().cpu().numpy()
        if item.ndim == 3 and item.shape[0] in (1, 3, 4) and item.shape[2] not in (1, 3, 4):
            item = item.transpose(1, 2, 0)  # torch's C x H x W
    if not isinstance(item, np.ndarray):
        raise DataError(f"an image model takes {TAKES['image']}; got a {type(item).__name__}")
    a = item
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise DataError(f"an image array must be H x W or H x W x 1/3/4, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "fiub":
            raise DataError(f"an image array must hold numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise DataError("an image array holds NaN or infinite values")
        if a.dtype.kind == "f" and (a.min() < 0 or a.max() > 1):
            if a.max() <= 255 and a.min() >= 0:
                raise DataError("a float image array must hold values in [0, 1] (or pass uint8 for 0-255); got "
                                f"values up to {a.max():g}")
            raise DataError(f"a float image array must hold values in [0, 1]; got {a.min():g} to {a.max():g}")
        a = np.clip(np.rint(a * 255 if item.dtype.kind == "f" else a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def _suffix(data: bytes, modality: str) -> str:
    """The file name suffix of a file's bytes, from its content."""
    if modality == "audio":
        for magic, suffix in _AUDIO_MAGIC.items():
            if data.startswith(magic):
                return suffix
        return ".wav"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return f".{(img.format or 'png').lower()}"
    except Exception:  # noqa: BLE001  (not an image: decoding it later reports the problem properly)
        return ".bin"


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
