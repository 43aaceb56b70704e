"""``tiny_cnn``: a small seeded CNN for fast tests, with the same interface as timm models."""

from __future__ import annotations

import torch
from torch import nn

from transfuse.backbones.base import Backbone
from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.timm_adapter import wrap_timm_model

_INPUT = InputSpec(size=32, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")


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


def _build(pretrained: bool) -> Backbone:
    if pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)  # "pretrained" for the tiny model means: this fixed seed
            model = TinyCNN()
    else:
        model = TinyCNN()  # seeded by create_backbone for --weights random
    modules = [("stem", "stem"), ("blocks.0", "blocks.0"), ("blocks.1", "blocks.1")]
    return wrap_timm_model("tiny_cnn", model, _INPUT, modules)


BACKBONES = (BackboneSpec(
    name="tiny_cnn", build=_build, input_spec=_INPUT,
    taps=(TapSpec("stem", 0, (8, 32, 32)), TapSpec("blocks.0", 1, (16, 16, 16)), TapSpec("blocks.1", 2, (24, 8, 8)),
          TapSpec("features", 3, (32, 8, 8)), TapSpec("logits", 4, (10,))),
    weights=WeightsSource(id="tiny_cnn:seed0", origin="seeded in code"), family="test",
    description="tiny seeded CNN for tests (32px, no real pretraining)", license="none (no trained weights)",
    params=6_098),)
