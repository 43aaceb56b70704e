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

import importlib

# Resolved on first use (PEP 562), so that importing the package (as the cache listing and the
# planner's constants do) never imports torch: only calibrating, compiling and running need it.
_EXPORTS = {
    "CALIBRATION_ITEMS": "calibrate", "Calibration": "calibrate", "check_key": "calibrate", "worst_cosine": "calibrate",
    "compile_id": "compiled", "package_built": "compiled",
    "autocast": "hardware", "device_kind": "hardware", "native_bf16": "hardware",
    "COMPILE_MIN_ITEMS": "planner", "PRECISIONS": "planner", "RUNTIMES": "planner", "Plan": "planner",
    "capabilities": "planner", "check_request": "planner", "compile_pays": "planner", "min_cosine": "planner",
    "plan": "planner", "validate": "planner",
    "runner": "runners",
    "CHECKS_FILE": "store", "EngineStore": "store",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


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


def __dir__() -> list[str]:
    return sorted(__all__)
