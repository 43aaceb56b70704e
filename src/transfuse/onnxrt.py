"""ONNX Runtime sessions, set up one way for every user of them (engines, the ONNX speech encoder)."""

from __future__ import annotations

import sys


def onnx_session(path: str):
    """An ONNX Runtime CPU session using as many threads as torch does (when torch is loaded: its
    thread count may have been set; otherwise both default to the physical cores), quiet unless it fails."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if "torch" in sys.modules:
        options.intra_op_num_threads = sys.modules["torch"].get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
