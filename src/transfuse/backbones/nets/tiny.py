"""``tiny_cnn``'s network: a small CNN with the interface of timm models, its "pretrained" weights a
fixed seed."""

from __future__ import annotations

import torch
from torch import nn

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import Backbone, wrap_timm_model


class TinyCNN(nn.Module):
    """conv stem -> two conv blocks -> 1x1 head conv -> linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU()),
        )
        self.head_conv = nn.Sequential(nn.Conv2d(24, 32, 1), nn.ReLU())
        self.classifier = nn.Linear(32, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new output layer (timm's method name), as fine-tuning needs."""
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_tiny_cnn(name: str, input_spec: InputSpec, pretrained: bool) -> Backbone:
    """The network seeded with 1234 (``pretrained``), or left to the caller's seed."""
    if pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)  # "pretrained" for the tiny model means: this fixed seed
            model = TinyCNN()
    else:
        model = TinyCNN()  # seeded by create_backbone for --weights random
    modules = [("stem", "stem"), ("blocks.0", "blocks.0"), ("blocks.1", "blocks.1")]
    return wrap_timm_model(name, model, input_spec, modules)
