"""A model directory on disk: one loop over its parts, written atomically, read back exactly.

Layout (format 4)::

    config.json         format version, the parts in order (name, kind, meta, array names),
                        classes, modality, library versions, whatever the job adds (data, ...)
    model.safetensors   every part's arrays, named ``<part name>.<array>``
    metrics.json        test metrics, when the job measured them
    ...                 files the job adds (confusion_matrix.png, search.json)

Nothing here knows what a part is beyond :class:`transfuse.parts.Part`. Directories written in
formats 1-3 are converted in memory on reading (:mod:`transfuse.modeldir.legacy`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transfuse.atomic import atomic_write_text, permissions
from transfuse.errors import ModelDirError
from transfuse.modeldir.destination import check_destination, is_model_dir
from transfuse.modeldir.files import (
    CONFIG,
    FORMAT_VERSION,
    METRICS,
    WEIGHTS,
    library_versions,
    read_arrays,
    read_config,
)
from transfuse.modeldir.legacy import migrate
from transfuse.parts import Part, json_ready, part_class, part_kinds

__all__ = ["CONFIG", "FORMAT_VERSION", "METRICS", "WEIGHTS", "check_destination", "is_model_dir", "library_versions",
           "TRAINING_ITEMS", "load_data", "load_parts", "read_arrays", "read_config", "save_parts"]
log = logging.getLogger(__name__)
DATA_PREFIX = "@"  # arrays about the model, not of a part (part names never start with it)
TRAINING_ITEMS = "training_items"  # data: uint64 digest ids of the items the model was trained on


def save_parts(parts: list[tuple[str, Part]], out_dir: str | Path, *, metrics: dict | None = None,
               extra: dict | None = None, files: dict[str, Callable[[Path], object]] | None = None,
               keep: tuple[str, ...] = (), force: bool = False, data: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``parts`` (``(name, part)`` in pipeline order) as a model directory at ``out_dir``.

    The directory is built beside the target and renamed into place, so a model already there is
    replaced whole or not at all; anything else already there is refused unless ``force``
    (:func:`~transfuse.modeldir.destination.check_destination`). ``keep`` names entries of the old
    directory that move into the new one (a fine-tuning run's ``checkpoints`` and ``logs``).
    ``files`` maps extra file names to ``fn(path)`` writers (plots); their failures are logged,
    never raised: a plot must not lose a trained model. ``data`` holds arrays about the model rather
    than of a part (the digests of its training items), stored as ``@<name>``. Folders and files
    follow the umask.
    """
    entries, arrays = [], {}
    for name, part in parts:
        if not name or "." in name or name.startswith(DATA_PREFIX):
            raise ModelDirError(f"part names cannot be empty, contain '.' or start with {DATA_PREFIX!r}, got {name!r}")
        registered = part_kinds().get(part.kind)
        if registered is not type(part):  # it would come back as another class, or not at all
            what = f"registered as {registered.__name__}" if registered else "not registered"
            raise ModelDirError(f"part {name!r} is a {type(part).__name__} of kind {part.kind!r}, which is {what}; "
                                f"give it a kind of its own and declare it in a module's PARTS (docs/extending.md)")
        try:
            state, meta = part.get_state()
        except AttributeError:  # sklearn's NotFittedError is one
            raise ModelDirError(f"part {name!r} is not fitted yet; call fit before saving") from None
        entries.append({"name": name, "kind": part.kind, "meta": json_ready(meta), "arrays": sorted(state)})
        arrays.update({f"{name}.{key}": np.ascontiguousarray(value) for key, value in state.items()})
    arrays.update({f"{DATA_PREFIX}{key}": np.ascontiguousarray(value) for key, value in (data or {}).items()})
    first, last = parts[0][1], parts[-1][1]
    classes = getattr(last, "classes_", None)
    config = {"format_version": FORMAT_VERSION, "parts": entries,
              "classes": json_ready(list(classes)) if classes is not None else None,
              "modality": getattr(first, "modality", None), "versions": library_versions(), **(extra or {})}
    out = Path(out_dir)
    check_destination(out, force=force, run=bool(keep), what="model folder")
    if out.is_symlink():
        out = out.resolve()  # the model goes where the link points; the link stays
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        os.chmod(tmp, permissions(0o777))  # mkdtemp makes it private; a model folder is shared like others
    except OSError as exc:
        raise ModelDirError(f"cannot write the model folder {out}: {exc.strerror or exc}; choose a writable "
                            f"folder") from None
    try:
        from safetensors.numpy import save_file

        save_file(arrays, str(tmp / WEIGHTS))
        os.chmod(tmp / WEIGHTS, permissions(0o666))
        if metrics is not None:
            atomic_write_text(tmp / METRICS, json.dumps(json_ready(metrics), indent=2) + "\n")
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=2) + "\n")
        for name, write in (files or {}).items():
            try:
                write(tmp / name)
            except Exception as exc:  # noqa: BLE001 (see the docstring)
                log.warning("could not write %s: %s", name, exc)
        _replace(tmp, out, keep)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelDirError(f"cannot write the model folder {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace(tmp: Path, out: Path, keep: tuple[str, ...] = ()) -> None:
    """Put the finished directory ``tmp`` at ``out``: whole or not at all, carrying ``keep`` over.
    Over an existing folder the two are exchanged in one step where the system can (Linux), so no
    moment exists without a model at ``out``; elsewhere the old one is renamed aside first."""
    moved = [name for name in keep if (out / name).exists()]
    old = None
    try:
        for name in moved:
            (out / name).rename(tmp / name)
        if out.exists() and _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous model
            return
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            out.rename(old / "model")
        tmp.rename(out)
    except BaseException:
        if old is not None and (old / "model").exists() and not out.exists():
            (old / "model").rename(out)  # put the previous model back
        for name in moved:
            if (tmp / name).exists() and out.is_dir():
                (tmp / name).rename(out / name)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where it is missing."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _entries(config: dict, path: Path) -> list[tuple[str, str, dict, list[str]]]:
    """``(name, kind, meta, array names)`` of every part listed in a config, checked for shape."""
    parts = config.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ModelDirError(f"{path / CONFIG} lists no parts; the save is broken or was edited, fit again")
    entries = []
    for i, entry in enumerate(parts):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("kind"), str) \
            and isinstance(entry.get("meta"), dict) and isinstance(entry.get("arrays", []), list) \
            and all(isinstance(a, str) for a in entry.get("arrays", []))
        if not ok:
            raise ModelDirError(f"{path / CONFIG}: part {i} needs a name, a kind, a meta object and a list of array "
                                f"names; the save is broken or was edited, fit again")
        entries.append((entry["name"], entry["kind"], entry["meta"], entry.get("arrays", [])))
    return entries


def load_data(model_dir: str | Path) -> dict[str, np.ndarray]:
    """The ``data`` arrays :func:`save_parts` stored (empty for models saved before format 4)."""
    from safetensors import SafetensorError, safe_open

    path = Path(model_dir)
    if read_config(path)["format_version"] < 4:
        return {}
    try:
        with safe_open(str(path / WEIGHTS), framework="numpy") as weights:  # only these arrays are read
            return {k[len(DATA_PREFIX):]: weights.get_tensor(k) for k in weights.keys() if k.startswith(DATA_PREFIX)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot read {path / WEIGHTS} ({exc}); the save was broken, fit again") from None


def load_parts(model_dir: str | Path) -> tuple[list[tuple[str, Part]], dict]:
    """The parts of a model directory, restored in order, and its (format-4) config."""
    path = Path(model_dir)
    config = read_config(path)
    if config["format_version"] < 4:
        config, arrays = migrate(config, path)
    else:
        arrays = read_arrays(path / WEIGHTS)
    entries = _entries(config, path)
    classes = [part_class(kind) for _, kind, _, _ in entries]  # every kind known here, before any work
    parts = []
    for (name, kind, meta, names), cls in zip(entries, classes):
        prefix = f"{name}."
        own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
        lacking = sorted(set(names) - set(own))
        if lacking:
            raise ModelDirError(f"{path} lacks the arrays {', '.join(lacking)} of part {name!r}; the save was broken, "
                                f"fit again")
        try:
            parts.append((name, cls.from_state(own, meta)))
        except ModelDirError as exc:
            raise ModelDirError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (whatever a part meets in a damaged state means the same)
            raise ModelDirError(f"{path}: part {name!r} ({kind}) cannot be restored ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); the save is broken or was edited, fit again") from None
    if not parts:
        raise ModelDirError(f"{path / CONFIG} lists no parts; fit again")
    return parts, config
