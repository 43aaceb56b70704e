"""Fusion and selection: do several layers (or backbones) beat the last layer alone?

Data: Fashion-MNIST (a fixed pool of 200 per class from the official train set for training draws, a fixed 2,000-image subset of the
official test set for testing) and Animal silhouettes (package animal-mnist, no official split:
a fixed 2,000-image test split, seed 0, and a pool of 200 per class from the rest). Budgets 10 and 100 labelled images per class, 3 seeds.
Features: efficientnet_lite0 taps blocks.4, blocks.5, blocks.6, features (average pooling),
and efficientnet_lite1 `features` for the two-backbone row. Every head is standardise +
logistic regression (C=1) unless the search picked otherwise.

Run: ``python benchmarks/fusion.py`` (about 12 minutes on 2 CPU cores the first time).
Writes benchmarks/results/fusion.{md,json}. ``--quick`` (a few minutes: Fashion-MNIST only, pool and
test set of 50 per class, 10 labels per class, seed 0) writes fusion-quick.{md,json}: the check
that a refactoring changed no number.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.blocks import from_slices
from transfuse.data.packaged import (
    ANIMAL_CLASSES,
    FASHION_CLASSES,
    animal_silhouettes,
    fashion_mnist,
    per_class_indices,
    write_pngs,
)
from transfuse.featurizers import FeatureExtractor
from transfuse.recipe import Recipe
from transfuse.search import default_recipes, search

from common import WORK, markdown_table, save_results

TAPS = ["blocks.4", "blocks.5", "blocks.6", "features"]
BUDGETS = [10, 100]
SEEDS = [0, 1, 2]
CONFIGS = {
    "last layer only (features)": Recipe(layers=("features",)),
    "last layer + PCA 0.95": Recipe(layers=("features",), select="pca:0.95"),
    "concat of 4 layers": Recipe(fusion="concat"),
    "concat + PCA 0.95": Recipe(fusion="concat", select="pca:0.95"),
    "concat + group-lasso (2 blocks)": Recipe(fusion="concat", select="group-lasso:2"),
    "weighted fusion": Recipe(fusion="weighted"),
    "weighted + PCA 0.95": Recipe(fusion="weighted", select="pca:0.95"),
    "weighted + group-lasso (2 blocks)": Recipe(fusion="weighted", select="group-lasso:2"),
    "non-linear (gated) fusion": Recipe(fusion="mlp"),
    "non-linear + PCA 0.95": Recipe(fusion="mlp", select="pca:0.95"),
    "non-linear + group-lasso (2 blocks)": Recipe(fusion="mlp", select="group-lasso:2"),
}


def dataset(name: str, per_class: int = 200):
    """(pool paths, pool labels, test paths, test labels): pool = 200 per class for training draws."""
    if name == "fashion":
        tr_x, tr_y = fashion_mnist("train")
        te_x, te_y = fashion_mnist("test")
        classes = FASHION_CLASSES
        pool, test = per_class_indices(tr_y, per_class, seed=0), per_class_indices(te_y, per_class, seed=0)
    else:
        x, y = animal_silhouettes()
        classes = ANIMAL_CLASSES
        test = per_class_indices(y, 200, seed=0)
        rest = np.setdiff1d(np.arange(len(y)), test)
        pool = rest[per_class_indices(y[rest], 200, seed=0)]
        tr_x, tr_y, te_x, te_y = x, y, x, y
    root = WORK / f"fusion-{name}" if per_class == 200 else WORK / f"fusion-{name}-{per_class}"
    p_pool = write_pngs(tr_x[pool], tr_y[pool], root / "pool", classes, ids=pool)
    p_test = write_pngs(te_x[test], te_y[test], root / "test", classes, ids=test)
    return p_pool, tr_y[pool], p_test, te_y[test]


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    return per_class_indices(labels, per_class, seed)


def main(quick: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = str(WORK / "cache-fusion")
    results: dict = {}
    rows = []
    budgets, seeds = ([10], [0]) if quick else (BUDGETS, SEEDS)
    for name in ("fashion",) if quick else ("fashion", "animals"):
        p_pool, y_pool, p_test, y_test = dataset(name, 50 if quick else 200)
        ext = FeatureExtractor(layers=TAPS, cache=cache)
        X = ext.fit_transform(p_pool + p_test)
        blocks = from_slices(ext.slices_)
        two = FeatureExtractor(backbone="efficientnet_lite0,efficientnet_lite1", layers="features", cache=cache)
        X2 = two.fit_transform(p_pool + p_test)
        n = len(p_pool)
        for per_class in budgets:
            acc: dict[str, list[float]] = {}
            secs: dict[str, list[float]] = {}
            picked = []

            def run(label, steps, Xall):
                t = time.perf_counter()
                model = Pipeline(steps).fit(Xall[:n][idx], y_pool[idx])
                secs.setdefault(label, []).append(time.perf_counter() - t)
                acc.setdefault(label, []).append(float(model.score(Xall[n:], y_test)))

            for seed in seeds:
                idx = draw(y_pool, per_class, seed)
                for tap in TAPS:
                    run(f"single layer {tap}", Recipe(layers=(tap,)).build(blocks), X)
                for label, recipe in CONFIGS.items():
                    run(label, recipe.build(blocks), X)
                run("two backbones (lite0 + lite1 features), concat",
                    Recipe(fusion="concat").build(from_slices(two.slices_)), X2)
                t = time.perf_counter()
                found = search(X[:n][idx], y_pool[idx], blocks, default_recipes(blocks), cv=5, seed=seed)
                model = Pipeline(found.best.build(blocks)).fit(X[:n][idx], y_pool[idx])
                secs.setdefault("--auto (search + refit)", []).append(time.perf_counter() - t)
                acc.setdefault("--auto (search + refit)", []).append(float(model.score(X[n:], y_test)))
                picked.append(found.best.label())
                print(f"{name} {per_class}/class seed {seed}: auto picked {found.best.label()}")
            singles = {k: np.mean(v) for k, v in acc.items() if k.startswith("single layer")}
            best_single = max(singles, key=singles.get)
            results[f"{name}/{per_class}"] = {"accuracy": acc, "seconds": secs, "auto_picked": picked,
                                              "best_single": best_single}
            for label in [best_single, *CONFIGS, "two backbones (lite0 + lite1 features), concat",
                          "--auto (search + refit)"]:
                shown = f"best single layer, oracle ({best_single.split()[-1]})" if label == best_single else label
                rows.append([name, per_class, shown, f"{np.mean(acc[label]):.3f} ± {np.std(acc[label]):.3f}",
                             f"{np.mean(secs[label]):.2f}"])
            shown_picks = sorted({p.replace(" | ", " / ") for p in picked})  # a pipe would split the table cell
            rows.append([name, per_class, "--auto picked", "; ".join(shown_picks), ""])
    what = ("seed 0; fashion: a pool and a test set of 500 images" if quick else
            "seeds 0, 1, 2; fashion: 2,000 official test images, animals: fixed 2,000-image test split")
    table = (f"Test accuracy (mean ± std over {what}) and fit time in seconds; efficientnet_lite0 taps "
             f"{', '.join(TAPS)}\n\n"
             + markdown_table(["data", "labels/class", "representation", "test accuracy", "fit s"], rows))
    save_results("fusion-quick" if quick else "fusion", table, results)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
