"""Transfer from a source network you trained yourself, against pretrained sources and from scratch.

Images. Source task: Fashion-MNIST classes 0-4 (t-shirt, trouser, pullover, dress, coat), all 30,000
of their official training images; ``small_cnn`` (Conv1-Pool1-Conv2-Pool2-Flatten-Dense) trained
from scratch on them with ``train-source``'s engine. Target task: classes 5-9 (sandal, shirt,
sneaker, bag, ankle boot) with 10 and 100 labelled images per class (seeded draws from a fixed pool
of 200 per class of the training set), scored on 1,000 official test images (200 per class).
Rows: small_cnn trained from scratch on the target labels; probes (standardise + logistic
regression) on the own source's Conv2, Pool2 and Dense taps; fine-tuning the own source (LP-FT);
the same probes on a random-init small_cnn; efficientnet_lite0 and dinov2_vits14 (`features`);
vgg16_hed per conv block (`blockN_pool`) and a random-init VGG16.

Sequences. Source: Free Spoken Digits 0-4 as MFCC sequences (all 1,500); GRU and LSTM sources
trained from scratch. Target: digits 5-9 with 10 and 100 labels per class, scored on 100 held-out
recordings per class. Rows: GRU from scratch on the target labels; probes on the GRU/LSTM sources
(rnn1+rnn2, last state and mean over frames); fine-tuning the GRU source; a random-init GRU; MFCC
mean+std statistics (no network at all).

Run: ``python benchmarks/own_source.py [--seeds 0,1,2] [--quick]`` (about 25 minutes on 2 CPU cores;
``--quick``: one seed, 500 test images, no DINOv2, fewer source epochs, about 8 minutes). Writes
benchmarks/results/own_source[-quick].{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, per_class_indices, spoken_digits, write_pngs
from transfuse.data.sequences import write_sequences
from transfuse.data.source import Source
from transfuse.extract import extract_features
from transfuse.finetune.config import FinetuneConfig
from transfuse.finetune.train import finetune_source
from transfuse.heads import LogisticHead

from common import WORK, markdown_table, save_results

SOURCE_CLASSES, TARGET_CLASSES = range(5), range(5, 10)
BUDGETS = (10, 100)


def _probe(X: np.ndarray, y: np.ndarray, pool_n: int, draws: dict) -> dict:
    """Accuracy per budget (list over seeds) of standardise + logistic regression on ``X`` (pool rows first)."""
    Xp, Xt, yp, yt = X[:pool_n], X[pool_n:], y[:pool_n], y[pool_n:]
    return {b: [float(LogisticHead().fit(Xp[idx], yp[idx]).score(Xt, yt)) for idx in idxs] for b, idxs in draws.items()}


def _train(items: list[str], labels: list[str], splits: list[str] | None, cfg: FinetuneConfig, out: Path) -> dict:
    kind = "sequence" if items[0].endswith(".npy") else "image"
    source = Source(items=items, labels=labels, name="bench", splits=splits, kind=kind)
    return finetune_source(source, cfg, out, progress=False, force=True)


def images(args, draws_seeds: list[int], rows: list, data: dict, work: Path) -> None:
    tr_x, tr_y = fashion_mnist("train")
    te_x, te_y = fashion_mnist("test")
    src_idx = np.flatnonzero(np.isin(tr_y, SOURCE_CLASSES))
    if args.quick:
        src_idx = src_idx[:: 3]
    target_train, target_test = np.flatnonzero(tr_y >= 5), np.flatnonzero(te_y >= 5)
    pool = target_train[per_class_indices(tr_y[target_train], 200, seed=0)]
    test = target_test[per_class_indices(te_y[target_test], 100 if args.quick else 200, seed=0)]
    root = WORK / "own-source"
    src_paths = write_pngs(tr_x[src_idx], tr_y[src_idx], root / "source", FASHION_CLASSES, ids=src_idx)
    pool_paths = write_pngs(tr_x[pool], tr_y[pool], root / "pool", FASHION_CLASSES, ids=pool)
    test_paths = write_pngs(te_x[test], te_y[test], root / "test", FASHION_CLASSES, ids=test)
    names = lambda ys: [FASHION_CLASSES[c] for c in ys]  # noqa: E731
    y_all = np.concatenate([tr_y[pool], te_y[test]])
    draws = {b: [per_class_indices(tr_y[pool], b, s) for s in draws_seeds] for b in BUDGETS}

    t = time.perf_counter()
    src_dir = work / "small_cnn-source"
    m = _train(src_paths, names(tr_y[src_idx]), None,
               FinetuneConfig(backbone="small_cnn", strategy="full", from_scratch=True, epochs=args.source_epochs,
                              layer_decay=1.0, probe_epochs=0, batch_size=128, patience=3), src_dir)
    data["image_source"] = {"accuracy": m["accuracy"], "seconds": time.perf_counter() - t, "images": len(src_paths)}
    print(f"small_cnn source on {len(src_paths)} images: {m['accuracy']:.3f} ({time.perf_counter() - t:.0f}s)")
    items = pool_paths + test_paths
    cache = str(WORK / "cache-own-source")
    results: dict[str, dict] = {}

    def trained(label: str, backbone: str, strategy: str, scratch: bool) -> None:
        acc = {}
        for b in BUDGETS:
            acc[b] = []
            for s, idx in zip(draws_seeds, draws[b]):
                chosen = [pool_paths[i] for i in idx]
                cfg = FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=scratch, epochs=args.epochs,
                                     layer_decay=1.0 if scratch else 0.75, probe_epochs=max(1, args.epochs // 3),
                                     seed=s, patience=5)
                m = _train(chosen + test_paths, names(tr_y[pool][idx]) + names(te_y[test]),
                           ["train"] * len(idx) + ["test"] * len(test_paths), cfg, work / "run")
                acc[b].append(m["accuracy"])
        results[label] = acc
        print(label, {b: np.mean(v) for b, v in acc.items()}, flush=True)

    def probes(prefix: str, layers: list[str], **kwargs) -> None:
        t = time.perf_counter()
        feats = extract_features(items, layers=",".join(layers), cache=cache, **kwargs)
        data.setdefault("engines", {})[prefix] = feats.engine.label()
        for layer in layers:
            results[f"{prefix} {layer}"] = _probe(feats.X[:, feats.slices[layer]], y_all, len(pool_paths), draws)
            print(f"{prefix} {layer}", {b: np.mean(v) for b, v in results[f'{prefix} {layer}'].items()},
                  f"({time.perf_counter() - t:.0f}s)", flush=True)

    trained("small_cnn from scratch on the target labels", "small_cnn", "full", True)
    probes("own small_cnn source, probe on", ["Conv2", "Pool2", "Dense"], backbone=f"local:{src_dir}")
    trained("own small_cnn source, fine-tuned (LP-FT)", f"local:{src_dir}", "lp-ft", False)
    probes("random-init small_cnn, probe on", ["Pool2", "Dense"], backbone="small_cnn", weights="random")
    probes("efficientnet_lite0 (ImageNet)", ["features"])
    if not args.quick:
        probes("dinov2_vits14", ["features"], backbone="dinov2_vits14")
    blocks = [f"block{i}_pool" for i in range(1, 6)]
    probes("vgg16_hed", blocks, backbone="vgg16_hed")
    probes("vgg16 random init", ["block3_pool", "block4_pool"], backbone="vgg16", weights="random")
    for label, acc in results.items():
        rows.append(["images", label, *[_cell(acc[b]) for b in BUDGETS]])
    data["images"] = results


def sequences(args, draws_seeds: list[int], rows: list, data: dict, work: Path) -> None:
    frames, digits = spoken_digits()
    src_idx = np.flatnonzero(digits < 5)
    tgt = np.flatnonzero(digits >= 5)
    test = np.sort(np.concatenate([np.flatnonzero(digits == d)[:100] for d in TARGET_CLASSES]))
    pool = np.setdiff1d(tgt, test)
    root = WORK / "own-source-seq"
    label = lambda i: f"digit{digits[i]}"  # noqa: E731
    src_root = write_sequences([frames[i] for i in src_idx], [label(i) for i in src_idx], root / "source", force=True)
    tgt_root = write_sequences([frames[i] for i in np.concatenate([pool, test])],
                               [label(i) for i in np.concatenate([pool, test])], root / "target", force=True)
    by_index = {int(p.stem): str(p) for p in tgt_root.rglob("*.npy")}
    pool_paths = [by_index[k] for k in range(len(pool))]
    test_paths = [by_index[len(pool) + k] for k in range(len(test))]
    src_paths = sorted(str(p) for p in src_root.rglob("*.npy"))
    src_labels = [Path(p).parent.name for p in src_paths]
    y_all = np.concatenate([digits[pool], digits[test]])
    draws = {b: [per_class_indices(digits[pool], b, s) for s in draws_seeds] for b in BUDGETS}
    results: dict[str, dict] = {}
    sources = {}
    for cell in ("gru", "lstm"):
        t = time.perf_counter()
        sources[cell] = work / f"{cell}-source"
        m = _train(src_paths, src_labels, None, FinetuneConfig(backbone=cell, strategy="full", from_scratch=True,
                                                               epochs=args.source_epochs * 4, layer_decay=1.0,
                                                               probe_epochs=0, patience=5), sources[cell])
        data[f"{cell}_source"] = {"accuracy": m["accuracy"], "seconds": time.perf_counter() - t}
        print(f"{cell} source: {m['accuracy']:.3f} ({time.perf_counter() - t:.0f}s)", flush=True)
    items = pool_paths + test_paths
    cache = str(WORK / "cache-own-source")

    def trained(name: str, backbone: str, strategy: str, scratch: bool) -> None:
        acc = {}
        for b in BUDGETS:
            acc[b] = []
            for s, idx in zip(draws_seeds, draws[b]):
                cfg = FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=scratch, epochs=args.epochs * 2,
                                     layer_decay=1.0 if scratch else 0.75, probe_epochs=max(1, args.epochs // 3),
                                     seed=s, patience=5)
                m = _train([pool_paths[i] for i in idx] + test_paths,
                           [label(pool[i]) for i in idx] + [label(i) for i in test],
                           ["train"] * len(idx) + ["test"] * len(test_paths), cfg, work / "run")
                acc[b].append(m["accuracy"])
        results[name] = acc
        print(name, {b: np.mean(v) for b, v in acc.items()}, flush=True)

    def probe(name: str, pooling: str, **kwargs) -> None:
        feats = extract_features(items, layers="rnn1,rnn2", pooling=pooling, cache=cache, **kwargs)
        results[name] = _probe(feats.X, y_all, len(pool_paths), draws)
        print(name, {b: np.mean(v) for b, v in results[name].items()}, flush=True)

    trained("GRU from scratch on the target labels", "gru", "full", True)
    for cell in ("gru", "lstm"):
        for pooling in ("last", "avg"):
            probe(f"own {cell.upper()} source, probe on rnn1+rnn2 ({pooling})", pooling,
                  backbone=f"local:{sources[cell]}")
    trained("own GRU source, fine-tuned (LP-FT)", f"local:{sources['gru']}", "lp-ft", False)
    probe("random-init GRU, probe on rnn1+rnn2 (avg)", "avg", backbone="gru", weights="random")
    stats = np.stack([np.concatenate([frames[i].mean(0), frames[i].std(0)]) for i in np.concatenate([pool, test])])
    results["MFCC mean+std statistics (no network)"] = _probe(stats, y_all, len(pool_paths), draws)
    for name, acc in results.items():
        rows.append(["spoken digits", name, *[_cell(acc[b]) for b in BUDGETS]])
    data["sequences"] = results


def _cell(accs: list[float]) -> str:
    return f"{np.mean(accs):.3f}" + (f" ± {np.std(accs):.3f}" if len(accs) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=15, help="target training epochs (sequences: twice this)")
    parser.add_argument("--source-epochs", type=int, default=5, help="image source epochs (sequences: 4x this)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("images", "sequences"), default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.source_epochs = "0", 2
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list = []
    data: dict = {"args": vars(args)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=WORK if WORK.is_dir() else None) as tmp:
        if args.only in (None, "images"):
            images(args, seeds, rows, data, Path(tmp))
        if args.only in (None, "sequences"):
            sequences(args, seeds, rows, data, Path(tmp))
    data["seconds"] = time.perf_counter() - start
    src = data.get("image_source", {})
    table = (f"Own-trained sources vs pretrained ones vs scratch; target test accuracy (mean ± std over seeds "
             f"{args.seeds}); head: standardise + logistic regression; engines: {data.get('engines', {})}. "
             f"Image source small_cnn: {src.get('accuracy', float('nan')):.3f} on its own test split after "
             f"{args.source_epochs} epochs.\n\n"
             + markdown_table(["data", "method", *[f"{b} labels/class" for b in BUDGETS]], rows))
    save_results("own_source-quick" if args.quick else "own_source", table, data)


if __name__ == "__main__":
    main()
