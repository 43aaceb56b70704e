"""ONNX for the probe heads, from their saved state: standardise, then an affine map (logistic
regression, linear SVM, ridge) or one hidden ReLU layer (MLP); probabilities by softmax (logistic
for two classes). kNN keeps its stored training rows in the graph: distances to all of them, the k
nearest (TopK), their distance-weighted votes. Heads without probabilities (SVM, ridge) output their ``scores`` instead (two
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
    graph.output = "scores"
    return scores


def mlp(graph: Graph, head, x: str) -> str:
    z = _standardise(graph, head, x)
    hidden = graph.op("Relu", [graph.matmul(z, head.state_["w0"], head.state_["b0"], "mlp_hidden")])
    scores = graph.matmul(hidden, head.state_["w1"], head.state_["b1"], "mlp_out")
    return _probabilities(graph, scores, head.state_["w1"].shape[1])


def knn(graph: Graph, head, x: str) -> str:
    from transfuse.errors import DataError

    if head.metric not in ("cosine", "euclidean") or head.weights not in ("distance", "uniform"):
        raise DataError(f"a kNN head with metric {head.metric!r} and weights {head.weights!r} does not export; "
                        f"cosine or euclidean distances with distance or uniform weights do")
    train, train_y = head.state_["train"].astype(np.float64), head.state_["train_y"]
    k = min(head.n_neighbors, len(train_y))
    z = _standardise(graph, head, x)
    if head.metric == "cosine":  # 1 - cos, the stored rows normalised once here
        norms = np.linalg.norm(train, axis=1, keepdims=True)
        unit = train / np.where(norms == 0, 1.0, norms)
        length = graph.reduce("ReduceL2", z, [1], "knn_norm", keepdims=1)
        zn = graph.op("Div", [z, graph.op("Max", [length, graph.const(1e-30)])], "knn_unit")
        dist = graph.op("Sub", [graph.const(1.0), graph.op("MatMul", [zn, graph.const(unit.T)])], "knn_dist")
    else:  # |z|^2 - 2 z.t + |t|^2, clipped at 0
        sq = graph.reduce("ReduceSum", graph.op("Mul", [z, z]), [1], "knn_sq", keepdims=1)
        cross = graph.op("MatMul", [z, graph.const(-2.0 * train.T)])
        d2 = graph.op("Add", [graph.op("Add", [sq, cross]), graph.const((train ** 2).sum(1)[None, :])])
        dist = graph.op("Sqrt", [graph.op("Relu", [d2])], "knn_dist")
    negative, index = graph.op("TopK", [graph.op("Neg", [dist]), graph.ints([k])], "knn_top", outputs=2, axis=1)
    near = graph.op("Neg", [negative], "knn_near")
    if head.weights == "distance":  # 1/d; a row with an exact match votes with its matches alone
        exact = graph.op("Cast", [graph.op("Equal", [near, graph.const(0.0)])], "knn_exact", to=1)
        any_exact = graph.op("Cast", [graph.reduce("ReduceMax", exact, [1], "knn_any", keepdims=1)], "knn_any", to=9)
        inverse = graph.op("Reciprocal", [graph.op("Max", [near, graph.const(1e-30)])])
        weight = graph.op("Where", [any_exact, exact, inverse], "knn_weight")
    onehot = np.eye(len(head.classes_))[train_y]
    votes = graph.op("Gather", [graph.const(onehot), index], "knn_votes", axis=0)  # (N, k, C)
    if head.weights == "distance":
        votes = graph.op("Mul", [votes, graph.op("Unsqueeze", [weight, graph.ints([2])])])
    total = graph.reduce("ReduceSum", votes, [1], "knn_total")
    return graph.op("Div", [total, graph.reduce("ReduceSum", total, [1], "knn_sum", keepdims=1)], "proba")


EXPORTS = (("logreg", linear), ("svm", linear), ("ridge", linear), ("mlp", mlp), ("knn", knn))
