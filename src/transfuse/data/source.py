"""Labelled sources: a folder of class sub-folders, or a CSV manifest ``path,label[,split]``."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from transfuse.data.images import IMAGE_EXTENSIONS, images_under
from transfuse.errors import DataError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "test")


@dataclass
class Source:
    """Labelled items of one data set.

    ``items`` are file paths (images, audio clips, ``.npy`` sequences) or texts, ``labels`` their
    class names, and ``splits`` an optional ``train``/``test`` tag per item from a manifest.
    """

    items: list[str]
    labels: list[str]
    name: str
    splits: list[str] | None = None
    kind: str = "image"
    root: str | None = None  # the class-folder tree it was read from (None for a manifest or a table)

    @property
    def classes(self) -> list[str]:
        """Sorted class names."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """Number of items per class."""
        return dict(sorted(Counter(self.labels).items()))

    def subset(self, keep: list[int]) -> Source:
        """A new source with only the items at the given positions."""
        return Source(
            items=[self.items[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            name=self.name,
            splits=None if self.splits is None else [self.splits[i] for i in keep],
            kind=self.kind,
            root=self.root,
        )

    def __len__(self) -> int:
        return len(self.items)


def load_image_folder(root: str | Path, skip_bad: bool = False) -> Source:
    """Read ``root/<class>/<image>`` into a :class:`Source`.

    Empty class folders are an error unless ``skip_bad`` (then a warning); non-image
    files are ignored with a log message.

    >>> load_image_folder("examples/fashion").classes[:2]  # doctest: +SKIP
    ['ankle_boot', 'bag']
    """
    return load_class_folders(root, IMAGE_EXTENSIONS, "image", skip_bad)


def load_audio_folder(root: str | Path, skip_bad: bool = False) -> Source:
    """Read ``root/<class>/<clip>`` (wav, flac, ogg, mp3, aiff, au) into an audio :class:`Source`."""
    from transfuse.data.audio import AUDIO_EXTENSIONS

    return load_class_folders(root, AUDIO_EXTENSIONS, "audio", skip_bad)


def load_sequence_folder(root: str | Path, skip_bad: bool = False) -> Source:
    """Read ``root/<class>/<item>.npy`` (arrays of shape (frames, width)) into a sequence :class:`Source`."""
    from transfuse.data.sequences import SEQUENCE_EXTENSIONS

    return load_class_folders(root, SEQUENCE_EXTENSIONS, "sequence", skip_bad)


def load_class_folders(root: str | Path, extensions: frozenset[str], kind: str, skip_bad: bool = False) -> Source:
    """One class per sub-folder of ``root``; items are the files with one of ``extensions``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class name>/<{kind} files>")
    items: list[str] = []
    labels: list[str] = []
    ignored = 0
    for d in class_dirs:
        files, passed_over = images_under(d, extensions)
        ignored += passed_over
        if not files:
            msg = f"class folder {d} has no {kind} files"
            if not skip_bad:
                raise DataError(f"{msg}; add some, delete the folder, or pass --skip-bad to ignore it")
            log.warning("%s; skipped", msg)
            continue
        items.extend(files)
        labels.extend([d.name] * len(files))
    if ignored:
        log.warning("ignored %d non-%s files in %s", ignored, kind, root)
    if not items:
        raise DataError(f"no {kind} files found under {root}")
    return Source(items=items, labels=labels, name=root.resolve().name, kind=kind, root=str(root.resolve()))


def load_manifest(path: str | Path) -> Source:
    """Read a CSV manifest with columns ``path,label`` and optionally ``split``.

    Relative paths are resolved against the manifest's folder.

    >>> load_manifest("data.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields or "label" not in fields:
                raise DataError(f"manifest {path} needs a header with columns path,label[,split]; "
                                f"found {fields or 'none'}")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        f"save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"manifest {path} is not valid CSV: {exc}") from None
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    items, labels, splits = [], [], []
    for n, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise DataError(f"{path}:{n}: empty path or label")
        p = Path(row["path"])
        items.append(str(p if p.is_absolute() else path.parent / p))
        labels.append(row["label"])
        split = row.get("split", "")
        if split and split not in SPLIT_NAMES:
            raise DataError(f"{path}:{n}: split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
        splits.append(split)
    has_split = any(splits)
    if has_split and not all(splits):
        raise DataError(f"{path}: the split column must be filled on every row or on none")
    from transfuse.data.audio import is_audio_file
    from transfuse.data.sequences import is_sequence_file

    kind = "audio" if all(is_audio_file(p) for p in items) else \
        "sequence" if all(is_sequence_file(p) for p in items) else "image"
    return Source(items=items, labels=labels, name=path.stem, splits=splits if has_split else None, kind=kind)
