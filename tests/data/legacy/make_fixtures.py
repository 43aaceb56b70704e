"""Write small model directories in the formats of older transfuse versions, with the predictions
those versions made, so tests/test_persist.py can check that they still load and predict the same.

Run it once per version, with that version's source first on the path::

    git worktree add /tmp/v1 cb9a50c^     # model format 1 (extractor + head)
    git worktree add /tmp/v2 b018663^     # model format 2 (fusion/selection steps, fine-tuned models)
    PYTHONPATH=/tmp/v1/src python tests/data/legacy/make_fixtures.py v1
    PYTHONPATH=/tmp/v2/src python tests/data/legacy/make_fixtures.py v2
    PYTHONPATH=src python tests/data/legacy/make_fixtures.py v3   # at 952df2e (format 3: engines, tfidf)

Every model is trained on real bundled data (3 Fashion-MNIST classes x 8 images of examples/fashion,
or examples/reviews.csv) with tiny seeded backbones in eager fp32, so any machine computes the same
features. ``expected.json`` beside each model lists the inputs (paths relative to the repository,
or texts) and the probabilities the saving version predicted for them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFUSE_CACHE"] = tempfile.mkdtemp(prefix="legacy-fixture-cache-")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
CLASSES = ("bag", "sandal", "trouser")


def image_inputs() -> tuple[Path, list[str]]:
    """A private copy of 3 classes x 8 bundled images (a class-folder source), and the repository
    paths of the same files (what the test predicts on)."""
    root = Path(tempfile.mkdtemp(prefix="legacy-images-")) / "data"
    rel = []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for src in sorted((REPO / "examples" / "fashion" / cls).glob("*.png"))[:8]:
            shutil.copy(src, root / cls / src.name)
            rel.append(str(src.relative_to(REPO)))
    return root, rel


def record(out: Path, inputs: list[str], proba, kind: str) -> None:
    (out / "expected.json").write_text(json.dumps(
        {"inputs": inputs, "input_kind": kind, "probabilities": np.asarray(proba, dtype=float).tolist()}, indent=1)
        + "\n")
    print("wrote", out)


def engine(version: str) -> dict:
    return {} if version == "v1" else {"runtime": "torch", "precision": "fp32"}


def probes(version: str) -> None:
    from transfuse.data import load_image_folder
    from transfuse.workflow import fit_source

    root, rel = image_inputs()
    paths = [str(REPO / p) for p in rel]
    runs = {"v1": {"probe": {}},
            "v2": {"fused": {"layers": "blocks.0,blocks.1,features", "fusion": "concat", "select": "pca:0.9"}},
            "v3": {"weighted": {"layers": "blocks.0,blocks.1,features", "fusion": "weighted", "select": "kbest:20"}}}
    for name, options in runs[version].items():
        out = HERE / version / name
        shutil.rmtree(out, ignore_errors=True)
        res = fit_source(load_image_folder(root), backbone="tiny_cnn", out_dir=out, **options, **engine(version))
        record(out, rel, res.model.predict_proba(paths), "paths")


def finetuned(version: str) -> None:
    from transfuse.data import load_image_folder
    from transfuse.finetune.train import FinetuneConfig, finetune_source
    from transfuse.pipeline import load_model

    root, rel = image_inputs()
    out = HERE / version / "finetuned"
    shutil.rmtree(out, ignore_errors=True)
    finetune_source(load_image_folder(root), FinetuneConfig(backbone="tiny_cnn", strategy="full", epochs=1,
                                                            image_size=32, batch_size=8, precision="32"), out)
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "logs", ignore_errors=True)
    record(out, rel, load_model(out).predict_proba([str(REPO / p) for p in rel]), "paths")


def texts(version: str) -> None:
    from transfuse.data import load_source
    from transfuse.workflow import fit_source

    reviews = load_source(REPO / "examples" / "reviews.csv", text_column="review", label_column="department")
    probe = reviews.items[:20]
    runs = {"scalar-mix": {"backbone": "tiny_text", "layers": "embeddings,layer.1,features", "fusion": "scalar-mix",
                           **engine(version)},
            "tfidf": {"backbone": "tfidf"}}
    for name, options in runs.items():
        out = HERE / version / name
        shutil.rmtree(out, ignore_errors=True)
        res = fit_source(reviews, out_dir=out, **options)
        record(out, probe, res.model.predict_proba(probe), "texts")


if __name__ == "__main__":
    version = sys.argv[1]
    probes(version)
    if version != "v1":
        finetuned(version)
    if version == "v3":
        texts(version)
