"""The ONNX Runtime engine: a backbone's tap network exported once per tap set, then run in fp32."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transfuse.onnxrt import onnx_session

if TYPE_CHECKING:  # imported where it runs: loading this module needs no torch
    import torch


class OnnxRunner:
    """Runs an exported tap network: input tensors in, a dict of raw tap outputs (torch) out."""

    def __init__(self, model: str, taps: list[str]) -> None:
        self.session = onnx_session(model)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.taps = taps

    def __call__(self, tensors: tuple) -> dict:
        """Tensors in, torch tensors out; numpy arrays in (the torch-free image path), arrays out."""
        if all(isinstance(t, np.ndarray) for t in tensors):
            outputs = self.session.run(self.taps, dict(zip(self.inputs, tensors)))
            return dict(zip(self.taps, outputs))
        import torch

        feeds = {name: t.detach().cpu().contiguous().numpy() for name, t in zip(self.inputs, tensors)}
        outputs = self.session.run(self.taps, feeds)
        return {tap: torch.from_numpy(np.asarray(o)) for tap, o in zip(self.taps, outputs)}


def tap_network(backbone, taps: list[str]) -> tuple:
    """``(module, input names, dynamic axes)`` of the backbone's tap network as it is exported: all
    ``taps`` as outputs, the batch (and sequence) axes dynamic."""
    names = list(backbone.input_names)
    return backbone.tap_network(taps), names, {name: dict(backbone.dynamic_axes) for name in [*names, *taps]}


def export_onnx(backbone, taps: list[str], sample: tuple[torch.Tensor, ...], path: Path, opset: int = 17) -> str:
    """Export the backbone's :func:`tap_network` to ``path``."""
    module, names, axes = tap_network(backbone, taps)
    return export_module(module, sample, path, names, taps, axes, opset)


def export_module(module, sample: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
                  axes: dict[str, dict[int, str]], opset: int = 17) -> str:
    """Export a torch module in eval mode to ``path`` (TorchScript exporter: the graphs every engine
    here was checked with); written beside and renamed, so a killed export leaves no half file."""
    import torch

    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow: the graph is fixed
            torch.onnx.export(module, tuple(t.cpu() for t in sample), str(partial), input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return str(path)
