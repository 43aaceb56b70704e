"""Write the bundled example data set: 30 Fashion-MNIST test images per class as PNG.

Source: Debian package ``dataset-fashion-mnist`` (Zalando Research, MIT licence).
Run: ``python examples/make_fashion_examples.py`` (only needed to regenerate ``examples/fashion``).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
ROOT = Path("/usr/share/datasets/fashion-mnist")


def load_idx(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the official ``train`` or ``t10k`` split."""
    images = np.frombuffer(gzip.open(ROOT / f"{split}-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(ROOT / f"{split}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels.astype(np.int64)


def main(out: Path = Path(__file__).parent / "fashion", per_class: int = 30) -> None:
    images, labels = load_idx("t10k")
    for k, name in enumerate(CLASSES):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(np.flatnonzero(labels == k)[:per_class]):
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png", optimize=True)
    print(f"wrote {per_class * len(CLASSES)} images to {out}")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:2]))
