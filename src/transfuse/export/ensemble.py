"""ONNX for an ensemble: each member's parts exported into the same graph (inputs shared where the
members prepare items the same way), their probabilities put in the ensemble's class order and
averaged with the ensemble's weights."""

from __future__ import annotations

import numpy as np

from transfuse.errors import DataError
from transfuse.export.graph import Graph


def ensemble(graph: Graph, part, x: str | None) -> str:
    from sklearn.pipeline import Pipeline

    from transfuse.export import exporters

    table = exporters()
    total = None
    for member, weight, label in zip(part.members, part.weights, part.labels):
        steps = list(member.steps) if isinstance(member, Pipeline) else [("model", member)]
        missing = [step.kind for _, step in steps if step.kind not in table]
        if missing:
            raise DataError(f"the ensemble's {label} has a {missing[0]} part, which does not export yet")
        y = None
        for _, step in steps:
            y = table[step.kind](graph, step, y)
        classes = [str(c) for c in steps[-1][1].classes_]
        order = [classes.index(str(c)) for c in part.classes_]
        if order != list(range(len(classes))):
            y = graph.columns(y, np.asarray(order), "member_order")
        y = graph.op("Mul", [y, graph.const(weight)], "member_weight")
        total = y if total is None else graph.op("Add", [total, y], "ensemble")
    graph.output = "probabilities"  # every member gives them (the ensemble checks)
    return total


EXPORTS = (("ensemble", ensemble),)
