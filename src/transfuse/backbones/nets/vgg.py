"""VGG's network, one module per Keras layer, and the reading of Keras ``.h5`` files into it
(kernels HWIO -> OIHW, the first convolution's input channels reversed: Keras's VGG weights were
trained on BGR images). The layers and the input contract are the spec's (:mod:`transfuse.backbones.vgg`)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.keras_files import conv_stack
from transfuse.backbones.nets.base import Backbone, TapPoint
from transfuse.backbones.weights import load_weights_file


class VGGNet(nn.Module):
    """VGG's layers (``features``, one module per Keras layer) and a pooled linear classifier (none
    until fine-tuning asks for one: the Keras files have no trained top)."""

    def __init__(self, layers: list[tuple[str, int]], num_classes: int = 0) -> None:
        """``layers``: ``(Keras name, output channels)`` in depth order; ``*_pool`` layers halve the map,
        the others are a 3x3 convolution and its ReLU."""
        super().__init__()
        modules: dict[str, nn.Module] = {}
        channels = 3
        for name, width in layers:
            if name.endswith("_pool"):
                modules[name] = nn.MaxPool2d(2, 2)
            else:
                modules[name] = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True))
                channels = width
        self.features = nn.Sequential(OrderedDict(modules))
        self.width = channels
        self.classifier = nn.Linear(channels, num_classes) if num_classes else nn.Identity()  # timm: 0 = none

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.features.modules() if isinstance(m, nn.Conv2d)]


def load_keras_vgg(model: VGGNet, path: str) -> None:
    """Fill the convolutions from a Keras ``.h5`` file (see the module docstring), strictly."""
    convs = model.conv_layers()
    expected = [tuple(c.weight.shape) for c in convs]
    with torch.no_grad():
        for i, (conv, (kernel, bias)) in enumerate(zip(convs, conv_stack(path, expected))):
            weight = torch.from_numpy(kernel)
            conv.weight.copy_(weight.flip(1) if i == 0 else weight)  # BGR-trained first layer -> RGB input
            conv.bias.copy_(torch.from_numpy(bias))


def _file_loader(model: VGGNet):
    def load(path: str) -> None:
        if path.endswith(".h5"):
            load_keras_vgg(model, path)
        else:
            load_weights_file(model, path)

    return load


def build_vgg(name: str, layers: list[tuple[str, int]], input_spec: InputSpec, default_taps: tuple[str, ...],
              weights_file: str | None) -> Backbone:
    """The network with every Keras layer a tap, filled from the Keras file ``weights_file``
    (``None``: the architecture alone); ``--weights FILE`` reads Keras ``.h5`` files too."""
    model = VGGNet(layers)
    if weights_file is not None:
        load_keras_vgg(model, weights_file)
    taps = [TapPoint(tap, f"features.{tap}", depth) for depth, (tap, _) in enumerate(layers)]
    return Backbone(name=name, weights_id="", input_spec=input_spec, model=model, taps=taps,
                    default_taps=default_taps, file_loader=_file_loader(model))
