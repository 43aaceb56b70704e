"""Parameter-based transfer vs feature probe vs training from scratch on Fashion-MNIST.

Data: a fixed pool of 200 per class from the official Fashion-MNIST training set (draws of 10
and 100 per class per seed) and a fixed 1,000-image subset of the official test set (100 per
class), all upscaled to ``--image-size`` (default 96 px) by the backbone's transform. Every
method sees the same training draw (15% of it held out for early stopping in the fine-tuning
runs) and the same test images. Methods: scratch (EfficientNet-Lite0 architecture, random
init, full training), feature probe (Lite0 `features` + logistic regression), head-only,
last:2, LP-FT and full fine-tuning.

Run: ``python benchmarks/finetune.py [--seeds 0,1,2] [--epochs 10] [--budgets 10,100] [--name finetune]``
Writes benchmarks/results/finetune.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np

from transfuse.data.packaged import FASHION_CLASSES, per_class_indices
from transfuse.data.source import Source
from transfuse.featurizers import FeatureExtractor
from transfuse.finetune.train import FinetuneConfig, finetune_source
from transfuse.heads import LogisticHead

from common import WORK, finetune_data, markdown_table, save_results

METHODS = [("scratch (full, random init)", "full", True), ("head only", "head", False),
           ("last:2", "last:2", False), ("LP-FT", "lp-ft", False), ("full", "full", False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="10,100")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--name", default="finetune", help="results file name (benchmarks/results/NAME.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    p_pool, y_pool, p_test, y_test = finetune_data()
    cache = str(WORK / "cache-finetune")
    results: dict = {}
    rows = []
    for per_class in budgets:
        acc: dict[str, list[float]] = {}
        secs: dict[str, list[float]] = {}
        for seed in seeds:
            idx = per_class_indices(y_pool, per_class, seed)
            items = list(p_pool[idx]) + p_test
            labels = [FASHION_CLASSES[c] for c in y_pool[idx]] + [FASHION_CLASSES[c] for c in y_test]
            splits = ["train"] * len(idx) + ["test"] * len(p_test)
            source = Source(items=items, labels=labels, name="fashion", splits=splits)
            t = time.perf_counter()
            ext = FeatureExtractor(cache=cache)
            X = ext.fit_transform(items)
            probe = LogisticHead().fit(X[: len(idx)], labels[: len(idx)]).score(X[len(idx):], labels[len(idx):])
            acc.setdefault("feature probe (features + logreg)", []).append(float(probe))
            secs.setdefault("feature probe (features + logreg)", []).append(time.perf_counter() - t)
            for label, strategy, scratch in METHODS:
                cfg = FinetuneConfig(strategy=strategy, from_scratch=scratch, epochs=args.epochs,
                                     image_size=args.image_size, seed=seed, probe_epochs=max(1, args.epochs // 3))
                with tempfile.TemporaryDirectory() as out:
                    m = finetune_source(source, cfg, out, progress=False)
                acc.setdefault(label, []).append(m["accuracy"])
                secs.setdefault(label, []).append(m["train_seconds"])
                print(f"{per_class}/class seed {seed} {label}: {m['accuracy']:.3f} ({m['train_seconds']:.0f}s, "
                      f"{m['epochs_run']} epochs)", flush=True)
        results[per_class] = {"accuracy": acc, "seconds": secs}
        for label in acc:
            rows.append([per_class, label, f"{np.mean(acc[label]):.3f} ± {np.std(acc[label]):.3f}",
                         f"{np.mean(secs[label]):.0f}"])
    table = (f"Fashion-MNIST, efficientnet_lite0 at {args.image_size} px, {args.epochs} epochs max (early stopping "
             f"patience 5), seeds {args.seeds}; 1,000 official test images\n\n"
             + markdown_table(["labels/class", "method", "test accuracy", "train s"], rows))
    save_results(args.name, table, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
