"""Cross-validated search over layers x fusion x selection x head regularisation on cached features.

Every candidate is a :class:`~transfuse.recipe.Recipe`; each is scored by stratified k-fold
cross-validation on the training features only (fusion and selection are fitted inside each
fold), in parallel over the available cores, deterministically for a seed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from transfuse.blocks import Blocks
from transfuse.errors import DataError
from transfuse.recipe import Recipe

log = logging.getLogger(__name__)
METRICS = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score,
           "macro_f1": lambda y, p: f1_score(y, p, average="macro")}  # what the search maximises (--metric)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


@dataclass
class SearchResult:
    """All candidates with their fold scores, best first, and why the best one won."""

    rows: list[dict]
    best: Recipe
    reason: str
    metric: str = "accuracy"

    def table(self) -> list[dict]:
        """Every candidate without its Recipe object (its layers kept: the report's per-layer curve)."""
        return [{**{k: v for k, v in r.items() if k != "recipe"}, "layers": list(r["recipe"].layers or ()),
                 "fusion": r["recipe"].fusion, "select": r["recipe"].select} for r in self.rows]


def default_recipes(blocks: Blocks, head: str = "logreg", budget: int | None = None,
                    head_params: dict | None = None) -> list[Recipe]:
    """Each layer alone (the per-layer probe), then all layers fused in every way, at two
    regularisation strengths for the linear head; ``head_params`` (e.g. ``class_weight``) go to every one."""
    names = list(blocks)
    fixed = head_params or {}
    cs = [{"C": 0.1, **fixed}, {"C": 1.0, **fixed}] if head in ("logreg", "svm") else [dict(fixed)]
    recipes = [Recipe(layers=(n,), head=head, head_params=c) for n in names for c in cs]
    if len(names) > 1:
        k = budget or max(1, min(2, len(names) - 1))
        for c in cs:
            recipes += [Recipe(fusion="concat", head=head, head_params=c),
                        Recipe(fusion="concat", select="pca:0.95", head=head, head_params=c),
                        Recipe(fusion="concat", select=f"group-lasso:{k}", head=head, head_params=c)]
        same_width = len({b - a for a, b in blocks.values()}) == 1  # a transformer's hidden layers
        for fusion in ("weighted", "scalar-mix", "mlp") if same_width else ("weighted", "mlp"):
            recipes += [Recipe(fusion=fusion, head=head, head_params=cs[-1]),
                        Recipe(fusion=fusion, select=f"group-lasso:{k}", head=head, head_params=cs[-1])]
    return recipes


def _score(recipe: Recipe, blocks: Blocks, X: np.ndarray, y: np.ndarray, train: np.ndarray,
           val: np.ndarray, metric: str = "accuracy") -> tuple[float, float]:
    import torch

    torch.set_num_threads(1)  # one candidate per core
    start = time.perf_counter()
    model = Pipeline(recipe.build(blocks)).fit(X[train], y[train])
    return float(METRICS[metric](y[val], model.predict(X[val]))), time.perf_counter() - start


def search(X: np.ndarray, y, blocks: Blocks, recipes: list[Recipe] | None = None, cv: int = 5,
           seed: int = 0, n_jobs: int = -1, metric: str = "accuracy") -> SearchResult:
    """Score ``recipes`` (default: :func:`default_recipes`) by stratified ``cv``-fold CV under ``metric``
    (accuracy, balanced_accuracy or macro_f1: :data:`METRICS`).

    >>> res = search(X_train, y_train, extractor.slices_ and from_slices(extractor.slices_))  # doctest: +SKIP
    >>> res.best.label()  # doctest: +SKIP
    """
    check_metric(metric)
    y = np.asarray(y)
    recipes = recipes or default_recipes(blocks)
    smallest = int(np.unique(y, return_counts=True)[1].min())
    folds = min(cv, smallest)
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 examples per class, the smallest class has {smallest}")
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y))
    log.debug("search: %d candidates x %d folds", len(recipes), folds)
    jobs = [(i, f) for i in range(len(recipes)) for f in range(folds)]
    scores = Parallel(n_jobs=n_jobs)(
        delayed(_score)(recipes[i], blocks, X, y, *splits[f], metric) for i, f in jobs)
    rows = []
    for i, recipe in enumerate(recipes):  # "order" breaks ties: simpler candidates come first
        acc = np.array([scores[j][0] for j, (ri, _) in enumerate(jobs) if ri == i])
        secs = sum(scores[j][1] for j, (ri, _) in enumerate(jobs) if ri == i) / folds
        rows.append({"recipe": recipe, "candidate": recipe.label(), "cv_score": float(acc.mean()),
                     "cv_std": float(acc.std()), "fit_seconds": float(secs),
                     "single_layer": bool(recipe.layers and len(recipe.layers) == 1), "order": i})
    # best mean first; ties go to the more stable, then the earlier (simpler) candidate; never to timing
    rows.sort(key=lambda r: (-round(r["cv_score"], 6), round(r["cv_std"], 6), r["order"]))
    best, runner = rows[0], rows[1] if len(rows) > 1 else None
    last = [r for r in rows if r["single_layer"] and r["recipe"].layers[0] == list(blocks)[-1]]
    what = metric.replace("_", " ")
    reason = f"{best['candidate']} scored {best['cv_score']:.3f} ± {best['cv_std']:.3f} {what} over {folds} folds"
    if runner:
        reason += f"; {best['cv_score'] - runner['cv_score']:+.3f} over the runner-up ({runner['candidate']})"
    if last and last[0] is not best:
        reason += f"; {best['cv_score'] - last[0]['cv_score']:+.3f} over the last layer alone"
    return SearchResult(rows=rows, best=best["recipe"], reason=reason, metric=metric)
