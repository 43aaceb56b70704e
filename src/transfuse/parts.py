"""The parts a saved model is made of, and the one way each of them persists.

Every part (a feature extractor, a fitted featurizer such as TF-IDF, a fusion, a selection step, a
head, a fine-tuned network) has a ``kind`` (its name in a model directory), a ``role`` and the pair

- ``get_state() -> (arrays, meta)``: what it learned as named numpy arrays, and everything else
  (constructor parameters, classes, what it kept) as JSON-ready ``meta``;
- ``from_state(arrays, meta)`` (a classmethod): the fitted part again, predicting exactly as before.

Roles: ``featurizer`` (items in, features out: the first step), ``fusion``, ``selection``,
``head`` (a classifier on features) and ``model`` (a whole classifier, items in). A module declares
its parts in ``PARTS = (...)``; the table below reads the built-in modules and the entry-point
group ``transfuse.parts`` (see :mod:`transfuse.plugins`), so a new kind is one new file.
"""

from __future__ import annotations

import functools
import logging
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from transfuse.errors import ModelDirError
from transfuse.plugins import declared

ROLES = ("featurizer", "fusion", "selection", "head", "model")
BUILTIN_MODULES = (
    "transfuse.featurizers.extractor",
    "transfuse.featurizers.tfidf",
    "transfuse.fusion",
    "transfuse.selection",
    "transfuse.heads",
    "transfuse.sklearn_head",
    "transfuse.finetune.model",
    "transfuse.ensemble",
)
ENTRY_POINTS = "transfuse.parts"
log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


@runtime_checkable
class Part(Protocol):
    """What every saved part provides (see the module docstring)."""

    kind: ClassVar[str]
    role: ClassVar[str]

    def get_state(self) -> tuple[Arrays, dict]: ...

    @classmethod
    def from_state(cls, arrays: Arrays, meta: dict) -> Part: ...


@functools.cache
def _table() -> dict[str, type]:
    """Built-in parts first; a plugin's part with an unknown role or a kind already taken is reported
    and left out (the first declaration of a kind wins)."""
    table: dict[str, type] = {}
    for cls in declared("PARTS", BUILTIN_MODULES, ENTRY_POINTS):
        kind, role = getattr(cls, "kind", None), getattr(cls, "role", None)
        if role not in ROLES or not isinstance(kind, str):
            log.warning("part %s left out: it needs a kind and a role (one of %s)", cls.__name__, ", ".join(ROLES))
        elif kind in table and table[kind] is not cls:
            log.warning("part %s left out: kind %r is %s already", cls.__name__, kind, table[kind].__name__)
        else:
            table[kind] = cls
    return table


def part_kinds(role: str | None = None) -> dict[str, type]:
    """``{kind: class}`` of every registered part, or of one role.

    >>> sorted(part_kinds("fusion"))
    ['concat', 'gated', 'scalar-mix', 'weighted']
    """
    return {k: c for k, c in _table().items() if role is None or c.role == role}


def part_class(kind: str) -> type:
    """The class saved under ``kind``; a kind this installation does not know is a clear error."""
    table = _table()
    if kind not in table:
        raise ModelDirError(f"the model holds a part of kind {kind!r}, which this transfuse does not know (it knows "
                            f"{', '.join(sorted(table))}); install the plugin that provides it, or upgrade transfuse")
    return table[kind]


def json_ready(value):
    """numpy scalars and arrays -> plain Python values, recursively (for ``meta``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def encode_strings(strings: list[str]) -> np.ndarray:
    """A list of strings as one uint8 array (UTF-8, newline-separated): safetensors stores no text.

    >>> decode_strings(encode_strings(["a b", "c"]))
    ['a b', 'c']
    """
    if any("\n" in s for s in strings):
        raise ValueError("strings stored as an array cannot contain newlines")
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8).copy()


def decode_strings(array: np.ndarray) -> list[str]:
    """Inverse of :func:`encode_strings`."""
    return bytes(np.asarray(array, dtype=np.uint8)).decode("utf-8").split("\n")
