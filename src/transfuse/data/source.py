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

    ``items`` are file paths (images now; text and audio later), ``labels`` their class
    names, and ``splits`` an optional ``train``/``test`` tag per item from a manifest.
    """

    items: list[str]
    labels: list[str]
    name: str
    splits: list[str] | None = None
    kind: str = "image"

    @property
    def classes(self) -> list[str]:
        """Sorted class names."""
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        """Number of items per class."""
        return dict(sorted(Counter(self.labels).items()))

    def subset(self, keep: list[int]) -> "Source":
        """A new source with only the items at the given positions."""
        return Source(
            items=[self.items[i] for i in keep],
            labels=[self.labels[i] for i in keep],
            name=self.name,
            splits=None if self.splits is None else [self.splits[i] for i in keep],
            kind=self.kind,
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
    return Source(items=items, labels=labels, name=root.resolve().name, kind=kind)


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

    kind = "audio" if all(is_audio_file(p) for p in items) else "image"
    return Source(items=items, labels=labels, name=path.stem, splits=splits if has_split else None, kind=kind)


def load_source(data: str | Path | None = None, manifest: str | Path | None = None, skip_bad: bool = False,
                text_column: str | None = None, label_column: str | None = None) -> Source:
    """One front door for labelled data, images or text.

    - a folder of class sub-folders of images, of ``.txt`` files (text) or of audio clips;
    - a CSV manifest ``path,label[,split]`` of image or audio files (positional or ``manifest=``);
    - a CSV or JSONL table of texts (``text_column``/``label_column``, defaults ``text``/``label``).

    >>> load_source("reviews.csv", text_column="review", label_column="department").kind  # doctest: +SKIP
    'text'
    """
    from transfuse.data.text import TEXT_TABLES, load_text_folder, load_text_table

    if manifest is not None:
        return load_manifest(manifest)
    if data is None:
        raise DataError("give a data folder or file, or --manifest FILE")
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix in TEXT_TABLES and path.is_file():
        if suffix == ".csv" and text_column is None and _csv_has_path_column(path):
            return load_manifest(path)
        return load_text_table(path, text_column, label_column, skip_bad=skip_bad)
    kind = _folder_kind(path) if path.is_dir() else None
    if kind == "text":
        return load_text_folder(path, skip_bad=skip_bad)
    if kind == "audio":
        return load_audio_folder(path, skip_bad=skip_bad)
    if path.is_file():
        raise DataError(f"{path} is a file; give a folder of class sub-folders, a CSV manifest of images, "
                        f"or a CSV/JSONL table of texts")
    return load_image_folder(data, skip_bad=skip_bad)


def _folder_kind(root: Path) -> str:
    """What a class-folder tree holds, from one listing: images win over anything else (a stray
    README.txt or sound does not change an image data set), then audio, then ``.txt`` text."""
    from transfuse.data.audio import is_audio_file
    from transfuse.data.images import is_image_file
    from transfuse.data.text import TEXT_FILES

    files = [p for d in root.iterdir() if d.is_dir() for p in d.iterdir()]
    if any(is_image_file(p) for p in files):
        return "image"
    if any(is_audio_file(p) for p in files):
        return "audio"
    return "text" if any(p.suffix.lower() in TEXT_FILES for p in files) else "image"


def _csv_has_path_column(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, OSError):
        return True  # let load_manifest report it
    return "path" in {h.strip().lower() for h in header}
