"""Real labelled data sets that install from package registries (see ASSETS.md), for tests,
examples and benchmarks. Nothing here downloads."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from transfuse.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Official Fashion-MNIST ``train`` (60k) or ``test`` (10k): uint8 images (N, 28, 28), int labels.

    Installed by the Debian package ``dataset-fashion-mnist`` (MIT).

    >>> images, labels = fashion_mnist("test")  # doctest: +SKIP
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    img_path = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.is_file():
        raise DataError(f"Fashion-MNIST not found at {FASHION_DIR}; install it with "
                        f"`apt-get install dataset-fashion-mnist`")
    images = np.frombuffer(gzip.open(img_path).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images, labels.astype(np.int64)


def per_class_indices(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``per_class`` indices of every class (sorted)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def write_pngs(images: np.ndarray, labels: np.ndarray, root: str | Path, class_names: list[str],
               ids: np.ndarray | None = None) -> list[str]:
    """Save images as ``root/<class>/<id>.png`` (skipping files already there); return the paths."""
    from PIL import Image

    root = Path(root)
    ids = np.arange(len(images)) if ids is None else ids
    paths = []
    for img, lab, i in zip(images, labels, ids):
        path = root / class_names[int(lab)] / f"{int(i):05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths
