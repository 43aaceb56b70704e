"""ONNX Runtime sessions, set up one way for every user of them (engines, the ONNX speech encoder)."""

from __future__ import annotations


def onnx_session(path: str):
    """An ONNX Runtime CPU session using as many threads as torch does, quiet unless it fails."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
