"""Transferability scores: how well a source's features (or its head's predictions) suit a target
task, computed in seconds from cached features, before any training. Each score is a pure function
``score(features, labels, ...) -> float`` (higher is better) declared as a :class:`Score` in a
module's ``SCORES``; third-party modules add theirs through the ``transfuse.scores`` entry points.

>>> sorted(scores())[:3]
['gbc', 'hscore', 'hscore_shrunk']
"""

from __future__ import annotations

import functools
import logging

from transfuse.errors import DataError
from transfuse.plugins import declared
from transfuse.transferability.base import Score, check_inputs

BUILTIN_MODULES = (
    "transfuse.transferability.logme",
    "transfuse.transferability.hscore",
    "transfuse.transferability.leep",
    "transfuse.transferability.transrate",
    "transfuse.transferability.gbc",
    "transfuse.transferability.sfda",
    "transfuse.transferability.proxies",
)
ENTRY_POINTS = "transfuse.scores"
log = logging.getLogger(__name__)

__all__ = ["Score", "check_inputs", "get_score", "scores"]


@functools.cache
def scores() -> dict[str, Score]:
    """Every declared score by name (built in first; a plugin's name clash is reported and skipped)."""
    found: dict[str, Score] = {}
    for score in declared("SCORES", BUILTIN_MODULES, ENTRY_POINTS):
        if score.name in found:
            log.warning("score %r of a plugin left out: the name is taken", score.name)
        else:
            found[score.name] = score
    return found


def get_score(name: str) -> Score:
    """The score called ``name``, or an error listing the known ones."""
    known = scores()
    if name not in known:
        raise DataError(f"unknown score {name!r}; choose one of {', '.join(sorted(known))}")
    return known[name]
