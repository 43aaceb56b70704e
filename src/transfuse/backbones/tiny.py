"""``tiny_cnn``: a small seeded CNN for fast tests, with the same interface as timm models (the
network: :mod:`transfuse.backbones.nets.tiny`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

_INPUT = InputSpec(size=32, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")


def _build(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.tiny import build_tiny_cnn

    return build_tiny_cnn("tiny_cnn", _INPUT, pretrained)


BACKBONES = (BackboneSpec(
    name="tiny_cnn", build=_build, input_spec=_INPUT,
    taps=(TapSpec("stem", 0, (8, 32, 32)), TapSpec("blocks.0", 1, (16, 16, 16)), TapSpec("blocks.1", 2, (24, 8, 8)),
          TapSpec("features", 3, (32, 8, 8)), TapSpec("logits", 4, (10,))),
    weights=WeightsSource(id="tiny_cnn:seed0", origin="seeded in code"), family="test",
    description="tiny seeded CNN for tests (32px, no real pretraining)", license="none (no trained weights)",
    params=6_098),)
