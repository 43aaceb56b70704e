"""ONNX for the feature extractor: each backbone's tap network (exported by torch, as the ONNX
engine does) merged into the graph under its own name, fed the pixels normalised inside the graph,
each tap pooled by ONNX operators, the blocks side by side in the saved column order.

The graph takes ``pixels``: float32 ``(N, 3, S, S)`` in [0, 1], the image after transfuse's
resize and centre crop (documented in the metadata); the backbone's mean and std are applied
inside. Images only for now, on the backbones the ONNX image engine serves (plain torch image
networks whose taps are maps or vectors)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from transfuse.errors import DataError
from transfuse.export.graph import Graph
from transfuse.taps import GEM_P, check_pooling

PIXELS = "pixels"


def pool(graph: Graph, x: str, rank: int, pooling: str, hint: str) -> str:
    """A ``(N, C, H, W)`` tap pooled to ``(N, C)`` (``avgmax``: ``(N, 2C)``) as transfuse pools it;
    a ``(N, D)`` tap passes through."""
    if rank == 2:
        return x
    if pooling == "avgmax":
        return graph.op("Concat", [pool(graph, x, rank, "avg", hint), pool(graph, x, rank, "max", hint)], hint, axis=1)
    if pooling == "max":
        return graph.op("Flatten", [graph.op("GlobalMaxPool", [x], hint)], hint, axis=1)
    if pooling == "gem":
        clipped = graph.op("Clip", [x, graph.const(1e-6)], hint)
        powered = graph.op("Pow", [clipped, graph.const(GEM_P)], hint)
        mean = graph.op("GlobalAveragePool", [powered], hint)
        return graph.op("Flatten", [graph.op("Pow", [mean, graph.const(1.0 / GEM_P)], hint)], hint, axis=1)
    return graph.op("Flatten", [graph.op("GlobalAveragePool", [x], hint)], hint, axis=1)


def extractor(graph: Graph, part, x: str | None) -> str:
    import onnx
    import torch

    from transfuse.backbones import create_backbone, get_spec
    from transfuse.engines.onnx import export_onnx
    from transfuse.engines.onnx_images import serves
    from transfuse.featurizers.extractor import backbone_list

    names = backbone_list(part.backbone)
    pooling = check_pooling(part.pooling, "image")
    specs = [get_spec(name) for name in names]
    if any(s.modality != "image" for s in specs):
        raise DataError(f"export reads images only so far; {part.backbone} reads {specs[0].modality}")
    sizes = {s.input_spec.size for s in specs}
    if len(sizes) > 1:
        raise DataError(f"the fused backbones take different image sizes ({sorted(sizes)}); one graph input "
                        f"cannot feed them all")
    size = sizes.pop()
    pixels = graph.input(PIXELS, ["batch", 3, size, size])
    blocks = {}
    for name, spec in zip(names, specs):
        prefix = f"{name}:" if len(names) > 1 else ""
        taps = [k.removeprefix(prefix) for k in part.slices_ if k.startswith(prefix)]
        if not serves(spec, taps, pooling):
            raise DataError(f"{name} cannot be exported yet (a {spec.family} network, taps {', '.join(taps)}, "
                            f"{pooling} pooling); plain torch image backbones can")
        backbone = create_backbone(name, weights=part.weights)
        with tempfile.TemporaryDirectory() as tmp:
            sample = torch.zeros(1, 3, size, size)
            net = onnx.load(export_onnx(backbone, taps, (sample,), Path(tmp) / "taps.onnx"))
        mean = np.asarray(spec.input_spec.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(spec.input_spec.std, np.float32).reshape(1, 3, 1, 1)
        normalised = graph.affine(pixels, mean, std, f"{name}_normalise")
        outputs = graph.merge(net, f"{name}/", {backbone.input_names[0]: normalised})
        shapes = {t.name: t.shape for t in spec.taps}
        for tap in taps:
            blocks[prefix + tap] = pool(graph, outputs[tap], len(shapes[tap]) + 1, pooling, f"{name}_{tap}_pool")
    ordered = [blocks[k] for k, _ in sorted(part.slices_.items(), key=lambda kv: kv[1].start)]
    graph.metadata.update({"input": PIXELS, "image_size": str(size), "crop_pct": str(specs[0].input_spec.crop_pct),
                           "interpolation": specs[0].input_spec.interpolation})
    return ordered[0] if len(ordered) == 1 else graph.op("Concat", ordered, "features", axis=1)


EXPORTS = (("extractor", extractor),)
