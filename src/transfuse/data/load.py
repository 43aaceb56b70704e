"""One front door for labelled data: which kind of source a path is, and its loader."""

from __future__ import annotations

import csv
from pathlib import Path

from transfuse.data.sequences import ARRAY_FILES, is_sequence_file, unpack_array_file
from transfuse.data.source import Source, load_audio_folder, load_image_folder, load_manifest, load_sequence_folder
from transfuse.data.text import TEXT_FILES, TEXT_TABLES, load_text_folder, load_text_table
from transfuse.errors import DataError


def load_source(data: str | Path | None = None, manifest: str | Path | None = None, skip_bad: bool = False,
                text_column: str | None = None, label_column: str | None = None) -> Source:
    """One front door for labelled data, images or text.

    - a folder of class sub-folders of images, of ``.txt`` files (text) or of audio clips;
    - a CSV manifest ``path,label[,split]`` of image or audio files (positional or ``manifest=``);
    - a CSV or JSONL table of texts (``text_column``/``label_column``, defaults ``text``/``label``);
    - a folder of class sub-folders of ``.npy`` frame sequences, or one ``.npz`` array file of them
      (:mod:`transfuse.data.sequences`).

    >>> load_source("reviews.csv", text_column="review", label_column="department").kind  # doctest: +SKIP
    'text'
    """
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
    if suffix in ARRAY_FILES and path.is_file():
        source = load_sequence_folder(unpack_array_file(path), skip_bad=skip_bad)
        source.name = path.stem
        return source
    kind = _folder_kind(path) if path.is_dir() else None
    if kind == "sequence":
        return load_sequence_folder(path, skip_bad=skip_bad)
    if kind == "text":
        return load_text_folder(path, skip_bad=skip_bad)
    if kind == "audio":
        return load_audio_folder(path, skip_bad=skip_bad)
    if path.is_file():
        raise DataError(f"{path} is a file; give a folder of class sub-folders, a CSV manifest of images, "
                        f"a CSV/JSONL table of texts, or an .npz array file of sequences")
    return load_image_folder(data, skip_bad=skip_bad)


def _folder_kind(root: Path) -> str:
    """What a class-folder tree holds, from one listing: images win over anything else (a stray
    README.txt or sound does not change an image data set), then audio, then ``.npy`` sequences,
    then ``.txt`` text."""
    from transfuse.data.audio import is_audio_file
    from transfuse.data.images import is_image_file

    files = [p for d in root.iterdir() if d.is_dir() for p in d.iterdir()]
    if any(is_image_file(p) for p in files):
        return "image"
    if any(is_audio_file(p) for p in files):
        return "audio"
    if any(is_sequence_file(p) for p in files):
        return "sequence"
    return "text" if any(p.suffix.lower() in TEXT_FILES for p in files) else "image"


def _csv_has_path_column(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, OSError):
        return True  # let load_manifest report it
    return "path" in {h.strip().lower() for h in header}
