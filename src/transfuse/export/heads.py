"""ONNX for the probe heads, from their saved state: standardise, then an affine map (logistic
regression, linear SVM, ridge) or one hidden ReLU layer (MLP); probabilities by softmax (logistic
for two classes). Heads without probabilities (SVM, ridge) output their ``scores`` instead (two
columns, ``-s`` and ``s``, where a binary head has one score)."""

from __future__ import annotations

import numpy as np

from transfuse.export.graph import Graph


def _standardise(graph: Graph, head, x: str) -> str:
    return graph.affine(x, head.state_["mean"], head.state_["scale"], f"{head.kind}_std")


def _probabilities(graph: Graph, scores: str, n_out: int) -> str:
    if n_out == 1:  # two classes, one score: [1 - p, p]
        p = graph.op("Sigmoid", [scores])
        return graph.op("Concat", [graph.op("Sub", [graph.const(np.ones((1, 1))), p]), p], "proba", axis=1)
    return graph.op("Softmax", [scores], "proba", axis=1)


def linear(graph: Graph, head, x: str) -> str:
    z = _standardise(graph, head, x)
    scores = graph.matmul(z, head.state_["coef"].T, head.state_["intercept"], head.kind)
    if head.has_proba:
        return _probabilities(graph, scores, head.state_["coef"].shape[0])
    if head.state_["coef"].shape[0] == 1:  # one score for two classes: [-s, s], the same argmax
        scores = graph.op("Concat", [graph.op("Neg", [scores]), scores], "scores", axis=1)
    graph.metadata["scores_only"] = "true"
    return scores


def mlp(graph: Graph, head, x: str) -> str:
    z = _standardise(graph, head, x)
    hidden = graph.op("Relu", [graph.matmul(z, head.state_["w0"], head.state_["b0"], "mlp_hidden")])
    scores = graph.matmul(hidden, head.state_["w1"], head.state_["b1"], "mlp_out")
    return _probabilities(graph, scores, head.state_["w1"].shape[1])


EXPORTS = (("logreg", linear), ("svm", linear), ("ridge", linear), ("mlp", mlp))
