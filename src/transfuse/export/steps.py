"""ONNX for the steps between features and head, from each step's saved state: the fusions (concat:
standardise, block scale, keep blocks; weighted, scalar-mix and gated: per-block projections mixed
by learned weights or a per-item gate), PCA (a centred linear map) and the column selections
(variance, k-best, L1: a list of kept columns)."""

from __future__ import annotations

import numpy as np

from transfuse.export.graph import Graph


def concat(graph: Graph, part, x: str) -> str:
    z = graph.affine(x, part.state_["mean"], part.state_["scale"], "concat")
    kept = np.concatenate([np.arange(a, b) for a, b in part.meta_["kept_blocks"].values()])
    return z if len(kept) == part.n_features_in_ and np.array_equal(kept, np.arange(len(kept))) else \
        graph.columns(z, kept, "concat_kept")


def learned(graph: Graph, part, x: str) -> str:
    """The learned fusions: blocks (projected, and through ReLU when gated) stacked ``(N, B, W)``,
    mixed by the softmax block weights or by a per-item softmax gate."""
    z = graph.affine(x, part.state_["mean"], part.state_["scale"], part.kind)
    stacked = []
    for i, (a, b) in enumerate(part.meta_["kept_blocks"].values()):
        h = graph.columns(z, np.arange(a, b), f"{part.kind}_block{i}")
        if part.project:
            h = graph.matmul(h, part.state_[f"proj.{i}"], part.state_[f"bias.{i}"], f"{part.kind}_proj{i}")
            if part.gated:
                h = graph.op("Relu", [h])
        stacked.append(graph.op("Unsqueeze", [h, graph.ints([1])], f"{part.kind}_stack"))
    H = stacked[0] if len(stacked) == 1 else graph.op("Concat", stacked, f"{part.kind}_stack", axis=1)
    if part.gated:
        logits = graph.op("Add", [graph.op("MatMul", [H, graph.const(part.state_["gate"])]),
                                  graph.const(part.state_["gate_bias"])], "gate")
        weights = graph.op("Unsqueeze", [graph.op("Softmax", [logits], "gate", axis=1), graph.ints([2])], "gate")
    else:
        weights = graph.const(part.state_["weights"].reshape(1, -1, 1), f"{part.kind}_weights")
    return graph.reduce("ReduceSum", graph.op("Mul", [H, weights], part.kind), [1], part.kind)


def pca(graph: Graph, part, x: str) -> str:
    centred = graph.affine(x, part.state_["mean"], None, "pca")
    return graph.matmul(centred, part.state_["components"].T, None, "pca")


def columns(graph: Graph, part, x: str) -> str:
    return graph.columns(x, part.state_["index"], part.kind)


EXPORTS = (("concat", concat), ("weighted", learned), ("scalar-mix", learned), ("gated", learned), ("pca", pca), ("variance", columns), ("kbest", columns), ("l1", columns))
