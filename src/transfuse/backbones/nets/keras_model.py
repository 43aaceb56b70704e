"""Keras 3 models on the PyTorch backend (where a model is a ``torch.nn.Module``) behind the Backbone
interface: loading a model file safely, one multi-output ``keras.Model`` per tap set for features, and
:class:`KerasNet` for fine-tuning. The spec: :mod:`transfuse.backbones.keras_model`."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import Backbone, TapPoint
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.spec import TapSpec


def import_keras():
    """Keras on the PyTorch backend (the backend is fixed when Keras is first imported)."""
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise WeightsUnavailableError("keras: backbones need Keras 3: pip install 'transfuse[keras]'") from None
    if keras.backend.backend() != "torch":
        raise WeightsUnavailableError(f"Keras was imported with the {keras.backend.backend()} backend before transfuse "
                                      f"could choose torch; set KERAS_BACKEND=torch")
    return keras


def load_keras_model(path: str, fresh: bool = False):
    """The model in ``path`` (safe mode: no lambdas deserialised), with a one-line error otherwise;
    loaded once per process while the file does not change, or ``fresh`` (a copy to train)."""
    from transfuse.backbones.weights import file_stamp

    return _read(path) if fresh else _load(*file_stamp(path))


@functools.lru_cache(maxsize=8)
def _load(path: str, size: int, mtime_ns: int):
    return _read(path)


def _read(path: str):
    keras = import_keras()
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for files it cannot read
        hint = (" (a weights-only file: give it to --weights of the architecture it belongs to, e.g. "
                "--backbone vgg16 --weights FILE)") if path.endswith(".h5") else ""
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise WeightsUnavailableError(f"cannot load Keras model {path}: {type(exc).__name__}: {first}{hint}") from None


def keras_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """NCHW RGB as every image network here gets it -> what the Keras model takes: NHWC, grey levels
    for a one-channel model."""
    if channels == 1 and x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    return x.permute(0, 2, 3, 1).contiguous()


def build_keras(name: str, path: str, input_spec: InputSpec, channels: int, taps: tuple[TapSpec, ...],
                default: tuple[str, ...]) -> KerasBackbone:
    """A fresh copy of the model in ``path`` behind the Backbone interface, its taps the spec's
    ``taps``; fine-tuning trains it up to ``default[0]`` (the layer before the output)."""
    net = KerasNet(load_keras_model(path, fresh=True), channels, default[0])  # fresh: fine-tuning changes it
    prefixes = net.layer_prefixes()
    last = next(t.depth for t in taps if t.name == default[0])  # layers after it are not fine-tuning groups
    return KerasBackbone(name=name, weights_id="", input_spec=input_spec, model=net,
                         taps=[TapPoint(t.name, prefixes.get(t.name, t.name) if t.depth <= last else t.name, t.depth)
                               for t in taps],
                         default_taps=default, channels=channels,
                         _shapes={t.name: t.shape for t in taps})


class KerasNet(nn.Module):
    """A Keras model as a timm-style network for fine-tuning: ``forward_features`` runs it up to
    ``feature_layer`` (the layer before its output), ``forward_head`` pools a map or sequence and
    applies a new linear ``classifier``. Inputs are NCHW like every image network here.

    The Keras layers run in inference mode (``training=False``) while their weights train, as
    Keras's own transfer-learning guide does: BatchNormalization keeps its moving statistics and
    dropout inside the model is off."""

    def __init__(self, model, channels: int, feature_layer: str) -> None:
        super().__init__()
        self.keras = model
        self.channels, self.feature_layer = channels, feature_layer
        self.__dict__["_body"] = None  # a keras.Model view sharing the weights: not a second registered copy
        self.classifier = nn.Identity()

    def layer_prefixes(self) -> dict[str, str]:
        """Keras layer name -> the prefix of its parameters' names here (``keras._torch_params.Conv1``)."""
        out = {}
        for pname, _ in self.named_parameters():
            head, sep, tail = pname.partition("_torch_params.")
            if sep and "/" in tail:
                out.setdefault(tail.split("/")[0], f"{head}{sep}{tail.split('/')[0]}")
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self._body is None:
            keras = import_keras()
            self.__dict__["_body"] = keras.Model(self.keras.inputs, self.keras.get_layer(self.feature_layer).output)
        out = self._body(keras_input(x, self.channels), training=False)
        return out.permute(0, 3, 1, 2) if out.ndim == 4 else out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:
            x = x.flatten(2).mean(-1) if x.ndim == 4 else x.mean(1)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        shape = self.keras.get_layer(self.feature_layer).output.shape
        self.classifier = nn.Linear(int(shape[-1]), num_classes)


@dataclass
class KerasBackbone(Backbone):
    """A Keras model behind the Backbone interface: one multi-output ``keras.Model`` per tap set."""

    channels: int = 3
    _submodels: dict = field(default_factory=dict, repr=False)

    def forward_raw(self, tensors, names, stop_early=True):
        self.check_taps(names)
        key = tuple(names)
        if key not in self._submodels:
            keras = import_keras()
            model = self.model.keras
            self._submodels[key] = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
        (x,) = tensors
        with torch.no_grad():  # features: no graph kept
            outputs = self._submodels[key](keras_input(x, self.channels), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return {n: o.permute(0, 3, 1, 2) if o.ndim == 4 else o for n, o in zip(names, map(torch.as_tensor, outputs))}

    def prepare(self, device: str) -> None:
        """Keras places its variables itself (on the GPU when torch sees one)."""
