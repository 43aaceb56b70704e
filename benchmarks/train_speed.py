"""Fine-tuning speed per epoch: fp32 vs bf16 autocast, one process vs DDP, CPU (and GPU when present).

Data: 100 per class from the official Fashion-MNIST training set (seed 0; 15% held out for
validation) and the fixed 1,000-image test subset of benchmarks/finetune.py, at ``--image-size``
(default 96 px). Each row fully fine-tunes EfficientNet-Lite0 for ``--epochs`` epochs (no early
stop) and reports seconds per epoch (training + validation, measured by the trainer) and test
accuracy. The DDP row runs the real CLI (`transfuse finetune --devices 2`), because Lightning
starts its worker processes by re-running the command.

Run: ``python benchmarks/train_speed.py [--epochs 3] [--image-size 96]``
Writes benchmarks/results/train_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from transfuse.data.packaged import FASHION_CLASSES, per_class_indices
from transfuse.data.source import Source
from transfuse.finetune.train import FinetuneConfig, finetune_source

from common import WORK, finetune_data, markdown_table, save_results


def manifest(per_class: int) -> Path:
    """A CSV manifest (path,label,split) of the training draw and the fixed test subset."""
    p_pool, y_pool, p_test, y_test = finetune_data()
    idx = per_class_indices(y_pool, per_class, 0)
    path = WORK / f"train_speed-{per_class}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows([p, FASHION_CLASSES[c], "train"] for p, c in zip(p_pool[idx], y_pool[idx]))
        w.writerows([p, FASHION_CLASSES[c], "test"] for p, c in zip(p_test, y_test))
    return path


def in_process(path: Path, cfg: FinetuneConfig) -> dict:
    from transfuse.data import load_manifest

    source: Source = load_manifest(path)
    with tempfile.TemporaryDirectory() as out:
        return finetune_source(source, cfg, out, progress=False)


def ddp(path: Path, cfg: FinetuneConfig, devices: int) -> dict:
    exe = Path(sys.executable).with_name("transfuse")
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([str(exe), "-q", "finetune", "--manifest", str(path), "--strategy", cfg.strategy,
                              "--epochs", str(cfg.epochs), "--patience", str(cfg.patience), "--image-size",
                              str(cfg.image_size), "--precision", cfg.precision, "--devices", str(devices),
                              "--out", out, "--json"], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr[-2000:])
    return json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    path = manifest(args.per_class)
    base = dict(strategy="full", epochs=args.epochs, image_size=args.image_size, patience=args.epochs + 1, seed=0)
    where = "cuda" if torch.cuda.is_available() else "cpu"
    runs = [(f"{where}, 1 process, fp32", FinetuneConfig(precision="32", **base), 1),
            (f"{where}, 1 process, bf16 autocast", FinetuneConfig(precision="bf16", **base), 1)]
    if where == "cpu":
        runs.append(("cpu, DDP 2 processes (gloo), fp32", FinetuneConfig(precision="32", **base), 2))
    rows, data = [], {}
    for label, cfg, devices in runs:
        m = in_process(path, cfg) if devices == 1 else ddp(path, cfg, devices)
        per_epoch = m["train_seconds"] / max(1, m["epochs_run"])
        data[label] = {"seconds_per_epoch": per_epoch, "accuracy": m["accuracy"], "epochs": m["epochs_run"]}
        print(f"{label}: {per_epoch:.1f} s/epoch, accuracy {m['accuracy']:.3f}", flush=True)
    ref = next(iter(data.values()))["seconds_per_epoch"]
    for label, d in data.items():
        rows.append([label, f"{d['seconds_per_epoch']:.1f}", f"{ref / d['seconds_per_epoch']:.2f}x",
                     f"{d['accuracy']:.3f}"])
    table = (f"Full fine-tuning of efficientnet_lite0 on Fashion-MNIST {args.per_class}/class at {args.image_size} px, "
             f"{args.epochs} epochs, batch 32, seed 0; {torch.get_num_threads()} CPU threads; accuracy on the "
             f"1,000-image test subset\n\n"
             + markdown_table(["run", "s/epoch", "speed vs first row", "test accuracy"], rows))
    save_results("train_speed", table, {"args": vars(args), "runs": data})


if __name__ == "__main__":
    main()
