"""Audio transfer vs the log-mel baseline on drum one-shots, with whole kits held out.

Data: the Hydrogen drum kits (Debian ``hydrogen-drumkits``, ``./scripts/install-data.sh audio``):
one-shot hits labelled kick / snare / hihat / tom / cymbal / clap from each kit's instrument names
(see ``transfuse.data.packaged.drum_hits``). Split: for each seed (0, 1, 2) about 30% of the kits
(whole kits, so no kit is in both halves) are the test set. Budgets: up to 20 hits per class
drawn from the training kits (fewer where a class has fewer), and all training hits.

Methods (all with the standardised logistic-regression head): log-mel statistics (mean and std
of 64 log-mel bands: the no-transfer baseline), MFCC statistics, speech_embedding (Google's
speech-embedding model, frames pooled by mean and std), sound_effects (the aisfx sound-effects
CNN; last block, its random-weight twin, and a concat of blocks 2, 3 and the last), and
speech_embedding + log-mel fused (two backbones, concat).

Run: ``python benchmarks/audio.py [--seeds 0,1,2]``. Writes benchmarks/results/audio.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.blocks import from_slices
from transfuse.data.packaged import drum_hits
from transfuse.featurizers import FeatureExtractor
from transfuse.recipe import Recipe

from common import WORK, markdown_table, save_results

METHODS = {  # label -> (backbone(s), layers, recipe)
    "log-mel statistics + logreg (no transfer)": ("logmel", "features", Recipe()),
    "MFCC statistics + logreg (no transfer)": ("logmel", "mfcc", Recipe()),
    "speech_embedding + logreg": ("speech_embedding", None, Recipe()),
    "sound_effects (last block) + logreg": ("sound_effects", None, Recipe()),
    "sound_effects random weights + logreg": ("sound_effects", None, Recipe()),
    "sound_effects, concat of blocks 2, 3, last": ("sound_effects", "block2,block3,features", Recipe(fusion="concat")),
    "speech_embedding + log-mel, concat": ("speech_embedding,logmel", "speech_embedding:features,logmel:features",
                                           Recipe(fusion="concat")),
}


def kit_split(kits: np.ndarray, seed: int, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Whole kits to the test side until it holds about ``test_fraction`` of the hits."""
    rng = np.random.default_rng(seed)
    names = rng.permutation(sorted(set(kits)))
    test_kits, n = [], 0
    for k in names:
        if n >= test_fraction * len(kits):
            break
        test_kits.append(k)
        n += int((kits == k).sum())
    test = np.isin(kits, test_kits)
    return np.flatnonzero(~test), np.flatnonzero(test)


def draw(y: np.ndarray, idx: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(idx[y[idx] == c])[:per_class] for c in np.unique(y[idx])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    hits = drum_hits()
    paths, y, kits = hits["path"], np.asarray(hits["label"]), np.asarray(hits["kit"])
    cache = str(WORK / "cache-audio")
    features, speed = {}, {}
    for label, (backbone, layers, recipe) in METHODS.items():
        weights = "random" if "random weights" in label else "pretrained"
        ext = FeatureExtractor(backbone=backbone, layers=layers, cache=cache, weights=weights)
        t = time.perf_counter()
        X = ext.fit_transform(paths)
        speed[label] = time.perf_counter() - t
        features[label] = (X, from_slices(ext.slices_), recipe)
    rows, results = [], {}
    for budget in (f"up to {args.per_class}/class", "all"):
        acc: dict[str, list[float]] = {}
        sizes = []
        for seed in seeds:
            train, test = kit_split(kits, seed)
            idx = train if budget == "all" else draw(y, train, args.per_class, seed)
            sizes.append((len(idx), len(test), len(set(kits[test]))))
            for label, (X, blocks, recipe) in features.items():
                model = Pipeline(recipe.build(blocks)).fit(X[idx], y[idx])
                acc.setdefault(label, []).append(float(model.score(X[test], y[test])))
            print(f"{budget} seed {seed}: " + ", ".join(f"{k.split(' +')[0]} {v[-1]:.3f}" for k, v in acc.items()),
                  flush=True)
        results[budget] = {"accuracy": acc, "train_test_testkits": sizes}
        n_train = f"{np.mean([s[0] for s in sizes]):.0f}"
        for label, values in acc.items():
            rows.append([budget, n_train, label, f"{np.mean(values):.3f} ± {np.std(values):.3f}"])
    counts = {c: int((y == c).sum()) for c in sorted(set(y))}
    table = (f"{len(y)} drum hits from {len(set(kits))} Hydrogen kits ({', '.join(f'{c} {n}' for c, n in counts.items())}); "
             f"test = whole held-out kits (about 30% of the hits), seeds {args.seeds}; test accuracy mean ± std over "
             f"the three kit splits\n\n"
             + markdown_table(["budget", "train hits (mean)", "features", "test accuracy"], rows))
    save_results("audio", table, {"results": results, "extract_seconds_cold_or_cached": speed, "counts": counts})


if __name__ == "__main__":
    main()
