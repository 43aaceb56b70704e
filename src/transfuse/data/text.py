"""Labelled text: a CSV or JSONL table with a text and a label column, or a folder of ``.txt``
files per class. The items of a text :class:`~transfuse.data.source.Source` are the texts.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from transfuse.data.source import SPLIT_NAMES, Source
from transfuse.errors import DataError

log = logging.getLogger(__name__)

TEXT_TABLES = (".csv", ".jsonl", ".ndjson")
TEXT_FILES = (".txt",)
TEXT_COLUMNS = ("text", "review", "sentence", "content", "body")  # tried in order when none is named


def _rows(path: Path) -> list[dict]:
    """Rows of a CSV (header line) or JSONL (one object per line) file as dicts of strings."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # a long text is one field (default: 128 KiB)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
            if path.suffix.lower() == ".csv":
                return [{(k or "").strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]
            rows = []
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}: not a JSON object ({exc.msg}); JSONL needs one object "
                                        f"per line") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
                    rows.append(row)
            return rows
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV: {exc}") from None


def _pick(rows: list[dict], wanted: str | None, defaults: tuple[str, ...], what: str, flag: str, path: Path) -> str:
    """The column holding ``what``: the one named, else the first of ``defaults`` present."""
    columns = list(dict.fromkeys(k for row in rows[:100] for k in row))
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path} has no column {wanted!r}; columns: {', '.join(columns)}")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for name in defaults:
        if name in lowered:
            return lowered[name]
    raise DataError(f"which column of {path} holds the {what}? pass {flag} (columns: {', '.join(columns)})")


def _listing(things: list) -> str:
    return ", ".join(map(str, things[:5])) + (" ..." if len(things) > 5 else "")


def _reject_or_skip(problem: str, skip_bad: bool) -> None:
    """Bad rows or files stop loading with a message saying how to go on, or are skipped with a warning."""
    if not skip_bad:
        raise DataError(f"{problem}; fix or delete them, or pass --skip-bad to leave them out")
    log.warning("%s: skipped", problem)


def load_text_table(path: str | Path, text_column: str | None = None, label_column: str | None = None,
                    skip_bad: bool = False) -> Source:
    """Read labelled texts from a CSV or JSONL file.

    Columns default to ``text`` and ``label`` (also ``review``/``sentence``/``content`` and
    ``class``/``category``); an optional ``split`` column (train/test) fixes the split. Rows with
    an empty text or label are an error that names them, or are skipped with ``skip_bad``.

    >>> load_text_table("reviews.csv", text_column="Review Text", label_column="Department Name")  # doctest: +SKIP
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path} has no rows")
    text_col = _pick(rows, text_column, TEXT_COLUMNS, "texts", "--text-column", path)
    label_col = _pick(rows, label_column, ("label", "class", "category", "target"), "labels", "--label-column", path)
    first_line = 2 if path.suffix.lower() == ".csv" else 1
    items, labels, splits, bad = [], [], [], []
    for n, row in enumerate(rows, start=first_line):
        text, label = row.get(text_col), row.get(label_col)
        text = "" if text is None else str(text)
        label = "" if label is None else str(label).strip()
        if not text.strip() or not label:
            bad.append(n)
            continue
        split = str(row.get("split") or "").strip().lower()
        if split and split not in SPLIT_NAMES:
            raise DataError(f"{path}:{n}: split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
        items.append(text)
        labels.append(label)
        splits.append(split)
    if bad:
        _reject_or_skip(f"{len(bad)} rows of {path} have an empty text or label (lines {_listing(bad)})", skip_bad)
    if not items:
        raise DataError(f"{path} has no rows with both a text and a label")
    has_split = any(splits)
    if has_split and not all(splits):
        raise DataError(f"{path}: the split column must be filled on every row or on none")
    return Source(items=items, labels=labels, name=path.stem, splits=splits if has_split else None, kind="text")


def load_text_folder(root: str | Path, skip_bad: bool = False) -> Source:
    """Read ``root/<class>/<name>.txt`` (one text per file, UTF-8) into a text :class:`Source`.

    Files that are empty or not UTF-8 are an error that names them, or skipped with ``skip_bad``.
    """
    root = Path(root)
    items, labels, bad = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in TEXT_FILES and p.is_file())
        if not files:
            _reject_or_skip(f"class folder {d} has no .txt files", skip_bad)
        for f in files:
            try:
                text = f.read_text(encoding="utf-8-sig")
            except (UnicodeDecodeError, OSError):
                bad.append(str(f))
                continue
            if not text.strip():
                bad.append(str(f))
                continue
            items.append(text)
            labels.append(d.name)
    if bad:
        _reject_or_skip(f"{len(bad)} text files are empty or not UTF-8: {_listing(bad)}", skip_bad)
    if not items:
        raise DataError(f"no readable .txt files under {root}/<class>/")
    return Source(items=items, labels=labels, name=root.resolve().name, kind="text", root=str(root.resolve()))


def read_texts(path: str | Path, text_column: str | None = None) -> list[str]:
    """Texts to predict: a CSV/JSONL table (its text column) or a plain file with one text per line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder; a text model predicts from files: .txt (one text per line), "
                        f".csv or .jsonl")
    if path.suffix.lower() in TEXT_TABLES:
        rows = _rows(path)
        col = _pick(rows, text_column, TEXT_COLUMNS, "texts", "--text-column", path)
        return [str(row.get(col) or "") for row in rows]
    try:
        return [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
