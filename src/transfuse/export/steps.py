"""ONNX for the steps between features and head, from each step's saved state: the concat fusion
(standardise, block scale, keep blocks), PCA (a centred linear map) and the column selections
(variance, k-best, L1: a list of kept columns)."""

from __future__ import annotations

import numpy as np

from transfuse.export.graph import Graph


def concat(graph: Graph, part, x: str) -> str:
    z = graph.affine(x, part.state_["mean"], part.state_["scale"], "concat")
    kept = np.concatenate([np.arange(a, b) for a, b in part.meta_["kept_blocks"].values()])
    return z if len(kept) == part.n_features_in_ and np.array_equal(kept, np.arange(len(kept))) else \
        graph.columns(z, kept, "concat_kept")


def pca(graph: Graph, part, x: str) -> str:
    centred = graph.affine(x, part.state_["mean"], None, "pca")
    return graph.matmul(centred, part.state_["components"].T, None, "pca")


def columns(graph: Graph, part, x: str) -> str:
    return graph.columns(x, part.state_["index"], part.kind)


EXPORTS = (("concat", concat), ("pca", pca), ("variance", columns), ("kbest", columns), ("l1", columns))
