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
    "transfuse.finetune.model",
)
ENTRY_POINTS = "transfuse.parts"

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
    table: dict[str, type] = {}
    for cls in declared("PARTS", BUILTIN_MODULES, ENTRY_POINTS):
        if getattr(cls, "role", None) not in ROLES:
            raise TypeError(f"part {cls.__name__} has role {getattr(cls, 'role', None)!r}; use one of {ROLES}")
        if cls.kind in table and table[cls.kind] is not cls:
            raise TypeError(f"two parts are named {cls.kind!r}: {table[cls.kind].__name__} and {cls.__name__}")
        table[cls.kind] = cls
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
