"""Imbalanced classes: does ``--class-weight balanced`` help the probe on real skewed data?

Tasks (both imbalanced as they come):
- drum hits (clap 17 ... hihat 124), sound_effects features (its last block), whole Hydrogen kits
  held out (about 30 % of the hits), kit splits seeds 0, 1, 2;
- clothing reviews -> rating (5 stars is the largest class by far), MiniLM sentence vectors, the
  text benchmark's fixed stratified 20 % test split (first 2,000 of it), training draws of 400
  reviews in the natural proportions, seeds 0, 1, 2.
Heads: logistic regression (C=1) without and with ``class_weight="balanced"``; the same features,
split and seed for both. Reported: accuracy, balanced accuracy, macro-F1 (mean ± std over seeds).

Run: ``python benchmarks/class_weight.py`` (a few minutes; needs ``./scripts/install-data.sh audio``).
Writes benchmarks/results/class_weight.{md,json}.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from transfuse.data.packaged import clothing_reviews, drum_hits
from transfuse.featurizers import FeatureExtractor
from transfuse.heads import LogisticHead

from common import WORK, markdown_table, save_results

SEEDS = (0, 1, 2)


def drums():
    from audio import kit_split

    hits = drum_hits()
    y, kits = np.asarray(hits["label"]), np.asarray(hits["kit"])
    X = FeatureExtractor(backbone="sound_effects", cache=str(WORK / "cache-audio")).fit_transform(hits["path"])
    return X, y, [kit_split(kits, seed) for seed in SEEDS]


def ratings():
    from text import fixed_split

    data = clothing_reviews()
    y = np.asarray(data["rating"]).astype(str)
    pool, test = fixed_split(y)
    test = test[:2000]
    splits = [(np.sort(np.random.default_rng(seed).permutation(pool)[:400]), test) for seed in SEEDS]
    used = sorted(set(np.concatenate([np.concatenate(s) for s in splits]).tolist()))
    X = np.full((len(y), 384), np.nan)
    X[used] = FeatureExtractor(backbone="minilm_l6").fit_transform([data["text"][i] for i in used])
    return X, y, splits


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    rows, results = [], {}
    for task, load in (("drum hits (sound_effects)", drums), ("review rating (minilm_l6)", ratings)):
        X, y, splits = load()
        counts = {str(c): int((y == c).sum()) for c in np.unique(y)}
        for weighting in (None, "balanced"):
            m = {"accuracy": [], "balanced accuracy": [], "macro-F1": []}
            for train, test in splits:
                pred = LogisticHead(class_weight=weighting).fit(X[train], y[train]).predict(X[test])
                m["accuracy"].append(accuracy_score(y[test], pred))
                m["balanced accuracy"].append(balanced_accuracy_score(y[test], pred))
                m["macro-F1"].append(f1_score(y[test], pred, average="macro"))
            results[f"{task} {weighting}"] = {"counts": counts, **m}
            rows.append([task, weighting or "none", *(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in m.values())])
            print(rows[-1], flush=True)
    table = ("Logistic regression (C=1) on the same features, split and seed, without and with "
             "`--class-weight balanced`; mean ± std over seeds 0, 1, 2\n\n"
             + markdown_table(["task", "class weight", "accuracy", "balanced accuracy", "macro-F1"], rows))
    save_results("class_weight", table, results)


if __name__ == "__main__":
    main()
