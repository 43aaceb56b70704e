"""Where a model may be written: a new folder, an empty one, or a transfuse model (replaced whole).

Anything else (a folder of the user's files, a file, the current folder) is refused before any
work, unless ``force``: a model folder is replaced atomically, so what was there would be lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transfuse.errors import ModelDirError
from transfuse.modeldir.files import CONFIG

RUN_ENTRIES = frozenset({"checkpoints", "logs"})  # what a fine-tuning run writes before its model exists
RUN_FILE = "checkpoints/run.json"  # what marks a folder as a transfuse fine-tuning run (see finetune.train)


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a transfuse model (a ``config.json`` with a format version)."""
    try:
        config = json.loads((Path(path) / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("format_version"), int)


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds only a transfuse fine-tuning run (its checkpoints, marked by
    ``run.json``, and its logs)."""
    path = Path(path)
    return (path / RUN_FILE).is_file() and {p.name for p in path.iterdir()} <= RUN_ENTRIES


def check_destination(out: str | Path, force: bool = False, run: bool = False, what: str = "--out") -> None:
    """Refuse ``out`` when writing a model there would lose something, or cannot work at all.

    Allowed: a path that does not exist, an empty folder, a transfuse model (replaced whole), and
    with ``run`` a fine-tuning run's folder (``checkpoints`` with its ``run.json``, and ``logs``).
    ``force`` allows replacing anything but the current folder or one above it. A symbolic link is
    followed (the model goes where it points).
    """
    out = Path(out)
    if out.is_symlink():
        if not out.exists():
            raise ModelDirError(f"{what} {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
                                f"name a folder")
        out = out.resolve()
    here = Path.cwd().resolve()
    resolved = out.resolve()
    if resolved == here or resolved in here.parents:
        raise ModelDirError(f"{what} {out} is the current folder or one above it, which cannot be replaced by a "
                            f"model folder; name a new folder, e.g. {what} {out / 'model'}")
    _check_writable(out, what)
    if not (out.exists() or out.is_symlink()) or force:
        return
    if not out.is_dir():
        raise ModelDirError(f"{what} {out} is a file; name a folder for the model (a new one, or a transfuse model "
                            f"to replace), or pass --force to replace the file")
    entries = sorted(p.name for p in out.iterdir())
    if not entries or is_model_dir(out) or (run and is_run_dir(out)):
        return
    shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    raise ModelDirError(f"{what} {out} holds files that are not a transfuse model ({shown}) and a model folder is "
                        f"replaced whole; choose a new folder, or pass --force to replace them")


def _check_writable(out: Path, what: str) -> None:
    """The model is built beside ``out`` and renamed into place: the nearest existing folder above
    it must be writable."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelDirError(f"cannot write {what} {out}: {parent} is not writable; choose a writable folder")
