"""Does transfer pay on Fashion-MNIST? Linear probe accuracy on the official 10k test set.

Rows: 10, 100 and 1,000 labelled training images per class (10, 100 with 3 seeds each;
1,000 per class = 10,000 images, one seeded draw). Columns: EfficientNet-Lite0 ImageNet
features, DINOv2 ViT-S/14 self-supervised features (a second source to choose from), the Lite0
architecture with random weights (no transfer), and raw pixels; every column uses the same head
(standardise + logistic regression, C=1). Lite0 runs eager fp32 (the numbers published before the
engines existed); DINOv2 runs the default engine (`auto`).

Run: ``python benchmarks/fashion_probe.py``  (about 35 minutes on 2 CPU cores, cached after)
Writes benchmarks/results/fashion_probe.{md,json}. ``--quick`` (about 2 minutes: a pool of 100 per
class, 1,000 test images, one seed at 10 and 100 per class, no DINOv2 column) writes
fashion_probe-quick.{md,json}: the check that a refactoring changed no number.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from transfuse.extract import extract_features
from transfuse.heads import LogisticHead

from common import WORK, fashion_pngs, markdown_table, save_results

BUDGETS = [(10, [0, 1, 2]), (100, [0, 1, 2]), (1000, [0])]
POOL_PER_CLASS = 1000


def subset(labels: np.ndarray, per_class: int, seed: int, pool: int = POOL_PER_CLASS) -> np.ndarray:
    """``per_class`` items of each class from the training pool (nested draws share a seed)."""
    if per_class >= pool:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in np.unique(labels)]))


def main(quick: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pool, budgets = (100, [(10, [0]), (100, [0])]) if quick else (POOL_PER_CLASS, BUDGETS)
    train_paths, train_y, train_px = fashion_pngs("train", pool, seed=0)
    test_paths, test_y, test_px = fashion_pngs("test", 100 if quick else 1000)  # quick: 1,000; else all 10,000
    cache = str(WORK / "cache-probe")
    reps = {"raw pixels": (train_px.reshape(len(train_px), -1) / 255.0, test_px.reshape(len(test_px), -1) / 255.0)}
    sources = {"efficientnet_lite0 ImageNet": dict(runtime="torch", precision="fp32"),
               "dinov2_vits14 (DINOv2, self-supervised)": dict(backbone="dinov2_vits14"),
               "efficientnet_lite0 random init": dict(weights="random", runtime="torch", precision="fp32")}
    if quick:
        del sources["dinov2_vits14 (DINOv2, self-supervised)"]
    engines = {}
    for name, kwargs in sources.items():
        t = time.perf_counter()
        feats = extract_features(train_paths + test_paths, cache=cache, **kwargs)
        engines[name] = {"engine": feats.engine.label(), "extracted": feats.n_extracted,
                         "seconds": time.perf_counter() - t}
        reps[name] = (feats.X[: len(train_paths)], feats.X[len(train_paths):])
    results: dict[str, dict[int, list[float]]] = {name: {} for name in reps}
    fit_seconds: dict[str, dict[int, float]] = {name: {} for name in reps}
    for per_class, seeds in budgets:
        for name, (Xtr, Xte) in reps.items():
            accs = []
            t = time.perf_counter()
            for seed in seeds:
                idx = subset(train_y, per_class, seed, pool)
                accs.append(LogisticHead().fit(Xtr[idx], train_y[idx]).score(Xte, test_y))
            fit_seconds[name][per_class] = (time.perf_counter() - t) / len(seeds)
            results[name][per_class] = accs
            print(f"{per_class:>5}/class  {name:<32} {np.mean(accs):.4f}  {accs}")
    order = [*sources, "raw pixels"]

    def cell(accs: list[float]) -> str:
        return f"{np.mean(accs):.3f}" + (f" ± {np.std(accs):.3f}" if len(accs) > 1 else "")

    rows = [[f"{pc} ({pc * 10:,} images)", len(seeds), *[cell(results[n][pc]) for n in order]]
            for pc, seeds in budgets]
    test_set = f"{len(test_paths):,} official test images" if quick else "official test set (10,000 images)"
    table = (f"Fashion-MNIST {test_set}; head: standardise + logistic regression (C=1); "
             "features: `features` tap, average pooling, 224 px\n\n"
             + markdown_table(["labelled training images per class", "seeds", *order], rows))
    save_results("fashion_probe-quick" if quick else "fashion_probe", table,
                 {"accuracy": results, "fit_seconds": fit_seconds, "extraction": engines})


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
