"""Shared helpers for the benchmark scripts: data on disk, tables, result files."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, per_class_indices, write_pngs

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WORK = HERE / ".work"  # generated PNGs and caches (git-ignored)


def fashion_pngs(split: str, per_class: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Paths of ``per_class`` seeded Fashion-MNIST images per class written as PNG, labels, raw pixels."""
    images, labels = fashion_mnist(split)
    idx = per_class_indices(labels, per_class, seed) if per_class * 10 < len(labels) else np.arange(len(labels))
    paths = write_pngs(images[idx], labels[idx], WORK / f"fashion-{split}", FASHION_CLASSES, ids=idx)
    return paths, labels[idx], images[idx]


def finetune_data() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """The fine-tuning benchmarks' data as PNGs: a fixed pool of 200 per class from the official
    training set (for seeded draws) and a fixed 1,000-image subset of the test set (100 per class).
    Returns pool paths, pool labels, test paths, test labels."""
    tr_x, tr_y = fashion_mnist("train")
    te_x, te_y = fashion_mnist("test")
    pool, test = per_class_indices(tr_y, 200, seed=0), per_class_indices(te_y, 100, seed=0)
    root = WORK / "finetune"
    p_pool = np.array(write_pngs(tr_x[pool], tr_y[pool], root / "pool", FASHION_CLASSES, ids=pool))
    p_test = write_pngs(te_x[test], te_y[test], root / "test", FASHION_CLASSES, ids=test)
    return p_pool, tr_y[pool], p_test, te_y[test]


def kit_split(kits: np.ndarray, seed: int = 0, share: float = 0.3) -> np.ndarray:
    """Drum hits: whole kits (seeded order) go to the test side until it holds ``share`` of the hits;
    returns the test mask."""
    rng = np.random.default_rng(seed)
    test_kits, n = [], 0
    for kit in rng.permutation(sorted(set(kits))):
        if n >= share * len(kits):
            break
        test_kits.append(kit)
        n += int((kits == kit).sum())
    return np.isin(kits, test_kits)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_results(name: str, table: str, data: dict) -> Path:
    """Print the table and write it (markdown) and the raw numbers (JSON) under benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    header = f"<!-- {name}: {stamp}, {platform.node()}, {platform.processor() or platform.machine()} -->\n"
    (RESULTS / f"{name}.md").write_text(header + table + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"when": stamp, **data}, indent=2) + "\n")
    print(table)
    print(f"\nwritten to {RESULTS / (name + '.md')}")
    return RESULTS / f"{name}.md"
