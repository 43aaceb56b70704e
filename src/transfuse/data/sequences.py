"""Sequences of feature frames (MFCCs, sensor readings): one ``.npy`` file of shape ``(frames, width)``
per item, in class sub-folders; or one array file (``.npz`` with ``X``: every item's frames stacked,
``lengths``: frames per item, ``y``: labels, optional ``classes``: their names), unpacked once into
such a folder under the data home, keyed by the file's digest.

Files are read with ``allow_pickle=False``: an ``.npy`` that holds Python objects is refused, never run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from transfuse.errors import CorruptInputError, DataError

log = logging.getLogger(__name__)

SEQUENCE_EXTENSIONS = frozenset({".npy"})
ARRAY_FILES = frozenset({".npz"})
MAX_FRAMES = 100_000  # longer items are refused (a padded batch of them would not fit in memory)


def is_sequence_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SEQUENCE_EXTENSIONS and not Path(path).name.startswith(".")


def read_sequence(path: str | Path) -> np.ndarray:
    """One item as float32 ``(frames, width)``; a 1-D array is one feature per frame. Missing, unreadable,
    pickled, empty, too long, wrongly shaped or non-finite arrays raise :class:`CorruptInputError`."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise CorruptInputError(f"sequence file not found: {path}", [str(path)]) from None
    except (OSError, ValueError, EOFError) as exc:
        raise CorruptInputError(f"cannot read sequence {path}: {str(exc)[:160]}", [str(path)]) from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        array.close()
        raise CorruptInputError(f"sequence {path} is an archive of several arrays, not one .npy array", [str(path)])
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise CorruptInputError(f"sequence {path} has shape {array.shape}; expected (frames, width) with at least one "
                                f"frame", [str(path)])
    if array.shape[0] > MAX_FRAMES or not np.issubdtype(array.dtype, np.number):
        raise CorruptInputError(f"sequence {path} is not a numeric array of at most {MAX_FRAMES} frames "
                                f"({array.dtype}, {array.shape[0]} frames)", [str(path)])
    out = np.array(array, dtype=np.float32)  # a copy: the file is mapped read-only
    if not np.isfinite(out).all():
        raise CorruptInputError(f"sequence {path} contains NaN or infinite values", [str(path)])
    return out


def sequence_width(paths: list[str]) -> int:
    """The frame width of the first readable item (what an RNN built for this data takes)."""
    for path in paths:
        try:
            return int(read_sequence(path).shape[1])
        except CorruptInputError:
            continue
    raise DataError("no readable sequence among the items; each must be a .npy array of shape (frames, width)")


def unpack_array_file(path: str | Path) -> Path:
    """The class-folder tree of an ``.npz`` array file (written once, under the data home, keyed by the
    file's digest; a changed file gets a new folder)."""
    from transfuse.data.fingerprint import file_digest
    from transfuse.data.packaged import data_home

    path = Path(path)
    target = data_home() / "sequences" / f"{path.stem}-{file_digest(path)[:16]}"
    if target.is_dir():
        return target
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"X", "lengths", "y"} - set(z.files)
            if missing:
                raise DataError(f"{path} lacks the arrays {', '.join(sorted(missing))}; an array file of sequences "
                                f"holds X (all frames stacked), lengths (frames per item) and y (labels)")
            frames, lengths, labels = z["X"], z["lengths"].astype(np.int64), z["y"]
            names = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read array file {path}: {str(exc)[:200]}") from None
    if frames.ndim == 1:
        frames = frames[:, None]
    if frames.ndim != 2 or labels.ndim != 1:
        raise DataError(f"{path}: X must be (frames, width) and y one label per item; got X {frames.shape}, "
                        f"y {labels.shape}")
    if len(lengths) != len(labels) or (lengths < 1).any() or int(lengths.sum()) != len(frames):
        raise DataError(f"{path}: lengths must be positive, one per label ({len(labels)}), and add up to the "
                        f"{len(frames)} frames of X; they add up to {int(lengths.sum())}")
    label_names = _label_names(path, labels, names)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        ends = np.cumsum(lengths)
        for i, (end, length, label) in enumerate(zip(ends, lengths, label_names)):
            folder = Path(tmp) / label
            folder.mkdir(exist_ok=True)
            np.save(folder / f"{i:06d}.npy", np.ascontiguousarray(frames[end - length: end], dtype=np.float32))
        try:
            Path(tmp).rename(target)
        except OSError:  # another process unpacked it first
            if not target.is_dir():
                raise
        else:
            Path(tmp).mkdir()  # TemporaryDirectory removes its folder on exit
    log.info("unpacked %d sequences of %s into %s", len(labels), path.name, target)
    return target


def _label_names(path: Path, labels: np.ndarray, names: list[str] | None) -> list[str]:
    """Class names of ``y`` (indices into ``classes`` when it is given), each usable as one folder name."""
    if names is not None:
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(names):
            raise DataError(f"{path}: with classes, y must hold indices 0..{len(names) - 1}")
        out = [names[int(v)] for v in labels]
    else:
        out = [str(v) for v in labels]
    bad = sorted({n for n in out if not n or n in (".", "..") or "/" in n or "\\" in n or "\0" in n})
    if bad:
        raise DataError(f"{path}: class names must be usable as folder names; {', '.join(map(repr, bad[:3]))} are not")
    return out


def write_sequences(arrays: list[np.ndarray], labels: list[str], root: str | Path, force: bool = False) -> Path:
    """Write items as ``root/<label>/<index>.npy`` (a data set in the folder layout); returns ``root``.
    An existing ``root`` is replaced only with ``force``."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not force:
            raise DataError(f"{root} is not empty; choose a new folder (or force=True to replace it)")
        shutil.rmtree(root)
    for i, (array, label) in enumerate(zip(arrays, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        np.save(root / label / f"{i:06d}.npy", np.asarray(array, dtype=np.float32))
    return root
