"""One way to find the things transfuse can be extended with: backbones, saved parts.

A module *declares* what it adds in a module-level tuple (``BACKBONES``, ``PARTS``) and imports no
registry. The registries read those tuples from the built-in modules they list by name, then from
every module that an installed distribution names in an entry-point group::

    # pyproject.toml of a plugin
    [project.entry-points."transfuse.backbones"]
    my_cnn = "my_package.my_backbone"     # a module with BACKBONES = (BackboneSpec(...),)
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

log = logging.getLogger(__name__)


def declared(attribute: str, builtin: tuple[str, ...], group: str) -> list:
    """Everything listed under ``attribute`` in the ``builtin`` modules, then in the modules (or
    lists, or callables returning lists) of the entry-point ``group``. A plugin that fails to load
    is reported and left out; a built-in one raises (that is a bug here).

    >>> [s.name for s in declared("BACKBONES", ("transfuse.backbones.tiny",), "transfuse.backbones")][:1]
    ['tiny_cnn']
    """
    found = []
    for name in builtin:
        found.extend(getattr(importlib.import_module(name), attribute))
    for point in entry_points(group=group):
        try:
            target = point.load()
            items = getattr(target, attribute, target)
            found.extend(items() if callable(items) else items)
        except Exception as exc:  # a third-party module may fail in any way: say so, keep going
            log.warning("plugin %s = %s (entry point group %s) could not be loaded: %s: %s", point.name, point.value,
                        group, type(exc).__name__, exc)
    return found
