"""Extraction engines: which runtime and precision compute a backbone's features, and the files
they keep.

- :mod:`~transfuse.engines.planner`: the planner (candidates fastest first, agreement thresholds),
  typed against the backbone spec;
- :mod:`~transfuse.engines.calibrate`: measuring candidates against eager fp32 on the first items;
- :mod:`~transfuse.engines.store`: the one owner of calibrations, exported graphs and compiled
  packages beside the feature cache (listing and pruning them);
- :mod:`~transfuse.engines.onnx`, :mod:`~transfuse.engines.compiled`: building and running those;
- :mod:`~transfuse.engines.runners`: loaded graphs and packages, the runner an extraction asks for;
- :mod:`~transfuse.engines.hardware`: what this machine computes natively.

Extraction asks :func:`plan` for a :class:`Plan` and :func:`runner` for the runner of its taps.
"""

from transfuse.engines.calibrate import CALIBRATION_ITEMS, Calibration, check_key, worst_cosine
from transfuse.engines.compiled import compile_id, package_built
from transfuse.engines.hardware import autocast, device_kind, native_bf16
from transfuse.engines.planner import (
    COMPILE_MIN_ITEMS,
    PRECISIONS,
    RUNTIMES,
    Plan,
    capabilities,
    check_request,
    compile_pays,
    min_cosine,
    plan,
    validate,
)
from transfuse.engines.runners import runner
from transfuse.engines.store import CHECKS_FILE, EngineStore

__all__ = [
    "CALIBRATION_ITEMS",
    "CHECKS_FILE",
    "COMPILE_MIN_ITEMS",
    "PRECISIONS",
    "RUNTIMES",
    "Calibration",
    "EngineStore",
    "Plan",
    "autocast",
    "capabilities",
    "check_key",
    "check_request",
    "compile_id",
    "compile_pays",
    "device_kind",
    "min_cosine",
    "native_bf16",
    "package_built",
    "plan",
    "runner",
    "validate",
    "worst_cosine",
]
