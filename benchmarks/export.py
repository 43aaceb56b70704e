"""What a deployed model costs and keeps: ``transfuse export`` against ``transfuse predict`` (eager).

For three models (EfficientNet-Lite0 + logistic regression on Fashion-MNIST; Lite0's last three
layers fused by concat; MiniLM + logistic regression on the clothing reviews' departments), each run
as transfuse's eager fp32 pipeline, the exported fp32 ONNX graph and its int8 version:

- latency per item at batch 1 (the mean over 32 single-item calls, decoding included) and throughput
  at batch 32 (items per second);
- file size (the model directory's safetensors for eager, which also needs the backbone's weights
  package; the .onnx file holds everything);
- accuracy on the same held-out test split;
- the wall time of a cold process predicting one new image (never seen, so no cached features):
  ``transfuse predict MODEL_DIR`` (eager, imports torch) against ``transfuse predict model.onnx``
  (ONNX Runtime alone).

``python benchmarks/export.py``; needs Fashion-MNIST and the clothing reviews
(``./scripts/install-data.sh images text``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from transfuse.data.packaged import FASHION_CLASSES
from transfuse.data.source import Source
from transfuse.export import export_model
from transfuse.export.quantize import quantize_int8
from transfuse.export.runtime import ExportedModel
from transfuse.pipeline import load_model
from transfuse.recipe import Recipe
from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, fit

from common import WORK, fashion_pngs, markdown_table, save_results

OUT = WORK / "export"
REPEATS = 32


def image_source() -> Source:
    train, y_train, _ = fashion_pngs("train", 50)
    test, y_test, _ = fashion_pngs("test", 30)
    names = np.asarray(FASHION_CLASSES)
    return Source(items=[*map(str, train), *map(str, test)], labels=[*names[y_train], *names[y_test]],
                  name="fashion", splits=["train"] * len(train) + ["test"] * len(test))


def text_source() -> Source:
    from transfuse.data.packaged import clothing_reviews

    data = clothing_reviews()
    rng = np.random.default_rng(0)
    rows = {d: rng.permutation([i for i, v in enumerate(data["department"]) if v == d])[:160]
            for d in ("Tops", "Dresses", "Bottoms")}
    train = [i for idx in rows.values() for i in idx[:100]]
    test = [i for idx in rows.values() for i in idx[100:]]
    texts, labels = data["text"], data["department"]
    return Source(items=[texts[i] for i in train + test], labels=[labels[i] for i in train + test], name="reviews",
                  kind="text", splits=["train"] * len(train) + ["test"] * len(test))


MODELS = {  # name: (data, featurizer, recipe)
    "Lite0 + logreg": (image_source, FeaturizerSpec(backbone="efficientnet_lite0", runtime="torch",
                                                    precision="fp32"), Recipe()),
    "Lite0 3 layers fused": (image_source, FeaturizerSpec(backbone="efficientnet_lite0", layers="blocks.5,blocks.6,features",
                                                          runtime="torch", precision="fp32"), Recipe(fusion="concat")),
    "MiniLM + logreg": (text_source, FeaturizerSpec(backbone="minilm_l6", runtime="torch", precision="fp32"), Recipe()),
}


def timed(predict, items: list) -> tuple[float, float]:
    """(ms per item at batch 1, items per second at batch 32)."""
    predict(items[:2])  # warm
    start = time.perf_counter()
    for item in items[:REPEATS]:
        predict([item])
    single = (time.perf_counter() - start) / REPEATS * 1000
    start = time.perf_counter()
    predict(items[:32])
    return single, 32 / (time.perf_counter() - start)


def new_image(i: int) -> str:
    """A picture no run has seen (random pixels, seeded): its features are never in a cache."""
    from PIL import Image

    path = OUT / "new" / f"{time.time_ns()}-{i}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(time.time_ns() % 2**32).integers(0, 256, (40, 60, 3), np.uint8)).save(path)
    return str(path)


def cold(args: list[str]) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", "import sys; from transfuse.cli import main; "
                          "sys.argv = ['transfuse'] + sys.argv[1:]; main()", *args], capture_output=True, text=True,
                         env={**os.environ, "TRANSFUSE_CACHE": str(OUT / "cold-cache")})
    if run.returncode:
        raise RuntimeError(run.stderr[-1000:])
    return time.perf_counter() - start


def run_model(name: str) -> list[dict]:
    make, spec, recipe = MODELS[name]
    source = make()
    folder = OUT / name.replace(" ", "_").replace("+", "")
    res = fit(FitRequest(source=source, featurizer=spec, recipe=recipe, output=OutputSpec(folder / "model", force=True)))
    test = [source.items[i] for i, s in enumerate(source.splits) if s == "test"]
    truth = np.asarray([source.labels[i] for i, s in enumerate(source.splits) if s == "test"])
    exported = export_model(folder / "model", folder / "onnx" / "model.onnx")
    rows = []
    try:
        q = quantize_int8(exported.path, folder / "onnx" / "model.int8.onnx", folder / "model", source, max_drop=1.0)
        int8 = ExportedModel(q.path)
    except Exception as exc:  # noqa: BLE001  (say so in the table)
        print(f"{name}: int8 failed: {exc}")
        q, int8 = None, None
    eager = load_model(folder / "model", cache=False)
    engines = {"eager (transfuse predict)": eager, "ONNX fp32": ExportedModel(exported.path)}
    if int8 is not None:
        engines["ONNX int8"] = int8
    weights = sum(p.stat().st_size for p in (folder / "model").glob("*.safetensors"))
    sizes = {"eager (transfuse predict)": weights, "ONNX fp32": exported.path.stat().st_size,
             "ONNX int8": q.path.stat().st_size if q else None}
    for engine, model in engines.items():
        single, throughput = timed(model.predict_proba, test)
        accuracy = float(np.mean(np.asarray(model.predict(test)).astype(str) == truth))
        row = {"model": name, "engine": engine, "ms_per_item_b1": single, "items_per_s_b32": throughput,
               "bytes": sizes[engine], "accuracy": accuracy, "n_test": len(test),
               "eager_accuracy_check": float(res.metrics["accuracy"])}
        if source.kind == "image" and engine != "ONNX int8":  # a new image each time: no cached features
            target = str(folder / "model") if engine.startswith("eager") else str(exported.path)
            extra = ["--runtime", "torch", "--precision", "fp32"] if engine.startswith("eager") else []
            row["cold_one_image_s"] = min(cold(["-q", "predict", target, new_image(i), *extra]) for i in range(2))
        rows.append(row)
        print(row, flush=True)
    return rows


def report(rows: list[dict]) -> str:
    headers = ["model", "engine", "ms/item, batch 1", "items/s, batch 32", "file", "accuracy", "cold process, 1 image"]
    body = []
    for r in rows:
        size = "-" if r["bytes"] is None else f"{r['bytes'] / 2**20:.1f} MB"
        if r["engine"].startswith("eager"):
            size += " (+ backbone weights)"
        body.append([r["model"], r["engine"], f"{r['ms_per_item_b1']:.1f}", f"{r['items_per_s_b32']:.0f}", size,
                     f"{r['accuracy']:.3f} ({r['n_test']})",
                     f"{r['cold_one_image_s']:.2f} s" if "cold_one_image_s" in r else "-"])
    return markdown_table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = [row for name in args.models.split(",") for row in run_model(name)]
    save_results("export", report(rows), {"rows": rows})


if __name__ == "__main__":
    main()
