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

from transfuse.errors import CorruptInputError, DataError

_AUDIO_MAGIC = {b"RIFF": ".wav", b"fLaC": ".flac", b"OggS": ".ogg", b"ID3": ".mp3", b"FORM": ".aiff"}
TAKES = {"image": "file paths, PIL images, numpy arrays (H x W, or H x W x 1/3/4; uint8, or floats in [0, 1]), "
                  "torch tensors (C x H x W or H x W x C) or the bytes of an image file",
         "audio": "file paths or the bytes of an audio file",
         "sequence": "paths of .npy files, or numpy arrays of shape (frames, width)",
         "text": "strings"}


def as_list(X, modality: str = "image") -> list:
    """The items of ``X``. A list or tuple is its items; an array of strings (any shape, a table's
    one column) its strings; for an image model a lone image (a PIL image, the bytes of a file, an
    H x W or H x W x 1/3/4 array, a C x H x W tensor) is one item, and an N x H x W x C stack (or
    N x H x W) is N items. A lone string is one item.

    >>> len(as_list(np.zeros((28, 28, 3), np.uint8))), len(as_list(np.zeros((5, 28, 28, 3), np.uint8)))
    (1, 5)
    """
    if isinstance(X, (str, bytes, bytearray, memoryview, os.PathLike)) or _is_pil(X):
        return [X]
    if isinstance(X, (list, tuple)):
        return list(X)
    if hasattr(X, "to_numpy") and not _is_tensor(X):  # a pandas Series or a one-column DataFrame
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype.kind in "USO":
        return list(X.ravel())
    if isinstance(X, np.ndarray) or _is_tensor(X):
        if modality == "image" and _one_image(tuple(X.shape), _is_tensor(X)) or modality == "sequence" and X.ndim == 2:
            return [X]
        return list(X) if X.ndim >= 1 else [X.item()]
    return list(X)


def _one_image(shape: tuple[int, ...], tensor: bool) -> bool:
    """Whether an array of this shape is one image rather than a stack of them."""
    if len(shape) == 2:
        return True
    if len(shape) == 3:
        return shape[2] in (1, 3, 4) or (tensor and shape[0] in (1, 3, 4))
    return False


def in_memory(items: list) -> bool:
    """Whether any item is not a path or a text."""
    return any(not isinstance(item, (str, os.PathLike)) for item in items)


@contextlib.contextmanager
def item_files(X, modality: str) -> Iterator[list[str]]:
    """``X`` as a list of strings (paths, or texts for a text model), writing in-memory items to a
    temporary folder that is removed on exit. An error about an unreadable in-memory item names it
    by its position (``item 3 (bytes)``), not by the temporary file.

    >>> with item_files(["a.png", np.zeros((4, 4, 3), np.uint8)], "image") as paths:
    ...     paths[0], paths[1].endswith(".png")
    ('a.png', True)
    """
    items = as_list(X, modality)
    if not in_memory(items):
        yield [str(i) for i in items]
        return
    if modality == "text":
        bad = next(i for i in items if not isinstance(i, str))
        raise DataError(f"a text model takes {TAKES['text']}; got a {type(bad).__name__}")
    with tempfile.TemporaryDirectory(prefix="transfuse-items-") as folder:
        names: dict[str, str] = {}
        paths = []
        for i, item in enumerate(items):
            if isinstance(item, (str, os.PathLike)):
                paths.append(str(item))
            else:
                paths.append(_write(item, modality, Path(folder), i))
                names[paths[-1]] = f"item {i} ({_kind(item)})"
        try:
            yield paths
        except CorruptInputError as exc:
            message = str(exc)
            for path, name in names.items():
                message = message.replace(path, name)
            raise CorruptInputError(message, [names.get(p, p) for p in exc.paths]) from None


def _kind(item) -> str:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "bytes"
    if _is_pil(item):
        return "PIL image"
    return f"{'tensor' if _is_tensor(item) else 'array'} {'x'.join(map(str, getattr(item, 'shape', ())))}"


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
        item = item.detach().cpu()
        item = (item.float() if item.is_floating_point() else item).numpy()  # numpy has no bfloat16
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
        a = _to_uint8(a)
    return Image.fromarray(np.ascontiguousarray(a))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> 0-255; integers (and booleans, as 0/1 pixels are more likely a mask than
    an image: refused) must already be 0-255."""
    kind = a.dtype.kind
    if kind == "f":
        if not np.isfinite(a).all():
            raise DataError("an image array holds NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            hint = " (or pass uint8 for 0-255)" if a.min() >= 0 and a.max() <= 255 else ""
            raise DataError(f"a float image array must hold values in [0, 1]{hint}; got {a.min():g} to {a.max():g}")
        return np.rint(a.astype(np.float64) * 255).astype(np.uint8)
    if kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"an integer image array must hold values in 0-255; got {a.min()} to {a.max()} (scale "
                            f"it to uint8 first)")
        return a.astype(np.uint8)
    raise DataError(f"an image array must hold numbers (uint8 0-255, or floats in [0, 1]); got dtype {a.dtype}")


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


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "getbands")


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
