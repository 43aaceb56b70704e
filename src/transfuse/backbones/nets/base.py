"""The built backbone: a network with named tap points, one forward pass for many taps; and
:func:`wrap_timm_model`, which gives any timm-convention network (``forward_features`` /
``forward_head``) its tap points.

What is known without building it (input contract, tap names and shapes, weights) is its
:class:`~transfuse.backbones.spec.BackboneSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from transfuse.backbones.inputs import InputSpec
from transfuse.config import default_workers
from transfuse.errors import UnknownLayerError

FINAL_TAPS = ("features", "logits")  # taken from forward_features / forward_head, not hooks


@dataclass(frozen=True)
class TapPoint:
    """A named place in the network whose output can be pooled into features."""

    name: str
    module: str  # dotted module path for hooks, or a FINAL_TAPS name
    depth: int


@dataclass
class Backbone:
    """A network with named tap points.

    ``model`` follows timm's convention: ``forward_features(x)`` gives the last feature
    map (or token sequence) and ``forward_head(f)`` the logits.

    The extraction engine talks to every modality through three methods: ``batches`` turns
    items (image paths here; texts or audio files in the subclasses) into model inputs,
    ``embed`` runs one forward pass and pools every requested tap, and ``default_batch_size``.
    """

    modality = "image"

    name: str
    weights_id: str
    input_spec: InputSpec
    model: nn.Module
    taps: list[TapPoint]
    default_taps: tuple[str, ...] = ("features",)
    num_prefix_tokens: int = 0
    weights_target: nn.Module | None = field(default=None, repr=False)  # what a weights file fills (default: model)
    file_loader: Callable[[str], None] | None = field(default=None, repr=False)  # reads weights files of other formats
    _shapes: dict[str, tuple[int, ...]] | None = field(default=None, repr=False)

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]

    def check_taps(self, names: list[str]) -> list[str]:
        """Validate tap names; raise :class:`UnknownLayerError` naming the valid ones."""
        known = set(self.tap_names)
        bad = [n for n in names if n not in known]
        if bad:
            raise UnknownLayerError(
                f"backbone {self.name!r} has no layer {', '.join(map(repr, bad))}; available: "
                f"{', '.join(self.tap_names)} (see `transfuse layers {self.name}`)"
            )
        return names

    @torch.inference_mode()
    def forward_taps(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Run ONE forward pass and return the raw outputs of every requested tap.

        The pass stops right after the deepest requested hooked tap when no final tap
        (``features``/``logits``) is needed.
        """
        return self.forward_raw((x,), names)

    def forward_raw(self, tensors: tuple[torch.Tensor, ...], names: list[str],
                    stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Raw tap outputs from the network inputs of :meth:`network_inputs` (one forward pass;
        ``stop_early=False`` runs it whole, as the ONNX tracer needs)."""
        (x,) = tensors
        self.check_taps(names)
        by_name = {t.name: t for t in self.taps}
        hooked = [by_name[n] for n in names if by_name[n].module not in FINAL_TAPS]
        need_final = any(by_name[n].module in FINAL_TAPS for n in names)
        deepest = max(hooked, key=lambda t: t.depth).name if hooked and not need_final and stop_early else None
        outputs: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        handles = []

        def make_hook(tap_name: str):
            def hook(_module, _inputs, output):
                outputs[tap_name] = output
                if tap_name == deepest:
                    raise _StopForward

            return hook

        for tap in hooked:
            handles.append(modules[tap.module].register_forward_hook(make_hook(tap.name)))
        try:
            feats = self.model.forward_features(x)
            if "features" in names:
                outputs["features"] = feats
            if "logits" in names:
                outputs["logits"] = self.model.forward_head(feats)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return {n: outputs[n] for n in names}

    def default_batch_size(self, device: str) -> int:
        """Small batches keep CPU activations in cache (EfficientNet-Lite0 on 2 cores: batch 4 runs
        about twice as fast as 32); GPUs want large ones."""
        return 64 if device.startswith("cuda") else 4

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        """Yield ``(inputs, positions, ok)`` per batch; ``ok`` flags the items that could be decoded.

        Decoding runs inline or in DataLoader workers (see transfuse.config.default_workers).
        """
        from torch.utils.data import DataLoader

        from transfuse.data.datasets import ImageFiles

        if num_workers is None:
            num_workers = default_workers(len(items), device)
        yield from DataLoader(ImageFiles(items, self.input_spec.geometry(), self.input_spec.size, pixels=True),
                              batch_size=batch_size, num_workers=num_workers, shuffle=False,
                              pin_memory=device.startswith("cuda"))

    @torch.inference_mode()
    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str,
              runner=None) -> dict[str, torch.Tensor]:
        """Pooled ``(len(good), D)`` features per tap of the decodable items ``good`` of one batch;
        ``runner`` (an exported graph or compiled package, see transfuse.runtime) replaces the eager forward pass."""
        tensors = self.network_inputs(inputs, good, device)
        raw = runner(tensors) if runner is not None else self.forward_raw(tensors, taps)
        return self.pool_raw(raw, tensors, inputs, good, taps, pooling)

    # The three pieces of ``embed``; an exported graph or compiled package replaces the middle one.
    input_names: ClassVar[tuple[str, ...]] = ("images",)  # names of network_inputs in an exported or compiled graph
    dynamic_axes: ClassVar[dict[int, str]] = {0: "batch"}  # axes of inputs and tap outputs that vary between batches

    def network_inputs(self, inputs, good: list[int], device: str) -> tuple[torch.Tensor, ...]:
        """The tensors the network itself takes, for the decodable items of a batch."""
        pixels = inputs[good].to(device, non_blocking=True)  # uint8 over the bus, normalised there
        return (self.input_spec.normalize(pixels).contiguous(memory_format=torch.channels_last),)

    def pool_raw(self, raw: dict[str, torch.Tensor], tensors: tuple[torch.Tensor, ...], inputs, good: list[int],
                 taps: list[str], pooling: str) -> dict[str, torch.Tensor]:
        """Raw tap outputs -> one pooled vector per item."""
        from transfuse.taps import pool

        return {tap: pool(raw[tap], pooling, self.num_prefix_tokens) for tap in taps}

    def tap_network(self, taps: list[str]) -> nn.Module:
        """A traceable module: network inputs -> raw outputs of ``taps`` (a tuple), for ONNX export and compiling."""
        return _TapNetwork(self, taps)

    def prepare(self, device: str) -> None:
        """Move to ``device`` in the fastest memory layout for inference."""
        self.model.to(device)
        if device.startswith("cpu") or device.startswith("cuda"):
            self.model.to(memory_format=torch.channels_last)

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without batch) of every tap, from one dummy forward pass."""
        if self._shapes is None:
            param = next(self.model.parameters())
            x = torch.zeros(1, 3, self.input_spec.size, self.input_spec.size, device=param.device)
            self.model.eval()
            out = self.forward_taps(x, self.tap_names)
            self._shapes = {n: tuple(out[n].shape[1:]) for n in self.tap_names}
        return self._shapes


def wrap_timm_model(name: str, model: nn.Module, input_spec: InputSpec,
                    modules: list[tuple[str, str]] | None = None) -> Backbone:
    """Wrap a timm model; ``modules`` lists ``(tap name, module path)`` in depth order,
    defaulting to the model's ``feature_info``."""
    if modules is None:
        info = getattr(model, "feature_info", None) or []
        modules = [(i["module"], i["module"]) for i in info]
    taps = [TapPoint(tap, path, depth) for depth, (tap, path) in enumerate(modules)]
    taps += [TapPoint(n, n, len(modules) + i) for i, n in enumerate(FINAL_TAPS)]
    return Backbone(name=name, weights_id="", input_spec=input_spec, model=model, taps=taps,
                    num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0))


class _TapNetwork(nn.Module):
    def __init__(self, backbone: Backbone, taps: list[str]) -> None:
        super().__init__()
        self.model = backbone.model  # registered, so its weights are the graph's initializers
        self.forward_raw = backbone.forward_raw
        self.taps = list(taps)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.forward_raw(tensors, self.taps, stop_early=False)
        return tuple(raw[tap] for tap in self.taps)


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early."""
