"""What replaces a backbone's eager forward pass: a loaded ONNX graph or compiled package, kept for
reuse by file and device."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

from transfuse.engines.compiled import CompiledRunner
from transfuse.engines.onnx import OnnxRunner
from transfuse.engines.planner import Plan
from transfuse.errors import DataError

log = logging.getLogger(__name__)
_LOADED: OrderedDict[tuple[str, str], object] = OrderedDict()  # loaded graphs and packages, by file and device


def forget(path: str) -> None:
    """Drop loaded copies of a graph or package file (it was replaced)."""
    for key in [k for k in _LOADED if k[0] == path]:
        del _LOADED[key]


def load_runner(runtime: str, path: str | None, taps: list[str], outputs: list[str] | None = None,
                device: str = "cpu"):
    """A session on an exported ONNX graph (``taps`` as its outputs) or a loaded compiled package
    (whose outputs are the layers ``outputs``), kept for reuse; None for eager runtimes."""
    if runtime not in ("onnx", "compile"):
        return None
    if (path, device) not in _LOADED:
        if not path or not os.path.isfile(path):
            raise DataError(f"the {'exported ONNX graph' if runtime == 'onnx' else 'compiled package'} is missing "
                            f"({path or 'not built'}); run again (it is built anew), or use --runtime torch")
        _LOADED[path, device] = OnnxRunner(path, taps) if runtime == "onnx" else CompiledRunner(path, outputs, device)
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
        try:
            os.utime(path)  # marks it used: `cache prune --older-than` keeps what is loaded
        except OSError:  # a read-only cache
            pass
    return _LOADED[path, device]


def runner(plan: Plan, taps: list[str], tap_names: list[str], device: str):
    """The runner an extraction planned as ``plan`` uses for ``taps`` (None: the eager forward pass).
    A compiled package computes every one of the backbone's ``tap_names``."""
    return load_runner(plan.runtime, plan.file, taps, tap_names, device)


def opens(runtime: str, path: str | None, taps: list[str], outputs: list[str] | None = None,
          device: str = "cpu") -> bool:
    """Whether a remembered graph or package is still there and loads (else it is built again)."""
    try:
        load_runner(runtime, path, taps, outputs, device)
        return True
    except Exception as exc:  # missing, truncated, or from an incompatible exporter or compiler
        log.info("building again: %s", exc)
        return False
