"""What a report costs: building ``report.html`` for a run with a 10,000-item test split, and the
page of the bundled example as a person sees it.

1. Fit EfficientNet-Lite0 + logistic regression on Fashion-MNIST (200 training images per class,
   the whole 10,000-image test set; features cached under ``benchmarks/.work/cache-report``).
2. Rebuild its report from the saved files three times (``transfuse report`` does the same) and
   report the median seconds and the file size, beside the time of ``fit`` itself (the naive way to
   see these numbers again: run it again) and of reading ``predictions.csv`` alone.
3. One real small run of each kind, default settings, opened in headless Chromium (Playwright):
   console errors and requests counted, a full-page screenshot saved to
   ``docs/img/report-<kind>.jpg`` (the README shows the image one): the bundled images
   (``examples/fashion``), the bundled reviews (``examples/reviews.csv``, departments), the drum
   hits (``examples/make_drum_folder.py``), and ``compare`` on the bundled images (probe, from
   scratch, fine-tune head; 2 epochs), whose fine-tuning run is the ``finetune`` screenshot.

``python benchmarks/report.py`` (needs Fashion-MNIST and chromium: ``./scripts/install-data.sh``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from transfuse.data import load_image_folder
from transfuse.data.packaged import FASHION_CLASSES
from transfuse.data.source import Source
from transfuse.report import write_report
from transfuse.report.runfiles import read_predictions
from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, fit

from common import HERE, WORK, fashion_pngs, markdown_table, save_results

REPO = HERE.parent


def big_run(out: Path) -> float:
    train, y_train, _ = fashion_pngs("train", 200)
    test, y_test, _ = fashion_pngs("test", 1000)  # the whole test set
    names = np.asarray(FASHION_CLASSES)
    source = Source(items=[*map(str, train), *map(str, test)], labels=[*names[y_train], *names[y_test]],
                    name="fashion", splits=["train"] * len(train) + ["test"] * len(test))
    spec = FeaturizerSpec(cache=str(WORK / "cache-report"))
    start = time.perf_counter()
    fit(FitRequest(source=source, featurizer=spec, output=OutputSpec(out, force=True)))
    return time.perf_counter() - start


def small_runs() -> dict[str, Path]:
    """One real small run per report kind (see the module docstring)."""
    import importlib.util

    from transfuse.data import load_source
    from transfuse.workflow import compare_source

    runs = {}
    fit(FitRequest(source=load_image_folder(REPO / "examples" / "fashion"), output=OutputSpec(WORK / "report-demo", force=True)))
    runs["image"] = WORK / "report-demo"
    texts = load_source(REPO / "examples" / "reviews.csv", text_column="review", label_column="department")
    fit(FitRequest(source=texts, output=OutputSpec(WORK / "report-text", force=True)))
    runs["text"] = WORK / "report-text"
    spec = importlib.util.spec_from_file_location("make_drum_folder", REPO / "examples" / "make_drum_folder.py")
    drums = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drums)
    drums.main(WORK / "drum-folder")
    fit(FitRequest(source=load_source(WORK / "drum-folder"), output=OutputSpec(WORK / "report-audio", force=True)))
    runs["audio"] = WORK / "report-audio"
    compare_source(load_image_folder(REPO / "examples" / "fashion"), WORK / "report-compare", strategies=("head",),
                   epochs=2, force=True)
    runs["compare"], runs["finetune"] = WORK / "report-compare", WORK / "report-compare" / "head"
    return runs


def screenshot(report: Path, png: Path) -> dict:
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        start = time.perf_counter()
        page.goto(report.resolve().as_uri())
        page.wait_for_load_state("load")
        seconds = time.perf_counter() - start
        page.screenshot(path=str(png), full_page=True, **({"type": "jpeg", "quality": 80} if png.suffix == ".jpg" else {}))
        browser.close()
    return {"errors": errors, "requests": requests, "open_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = WORK / "report-run"
    fit_seconds = big_run(out)
    builds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        path = write_report(out)
        builds.append(time.perf_counter() - start)
    start = time.perf_counter()
    n = len(read_predictions(out / "predictions.csv").items)
    read_seconds = time.perf_counter() - start
    size = path.stat().st_size
    big_browser = screenshot(path, WORK / "report-big.png")
    rows = [["Fashion-MNIST, Lite0 + logreg", n, f"{statistics.median(builds):.2f}", f"{size / 2**20:.2f} MB",
             f"{read_seconds:.2f}", f"{fit_seconds:.1f}", len(big_browser["errors"]), len(big_browser["requests"]),
             f"{big_browser['open_seconds']:.2f}"]]
    browsers = {}
    for kind, folder in small_runs().items():
        jpg = REPO / "docs" / "img" / f"report-{kind}.jpg"
        jpg.parent.mkdir(parents=True, exist_ok=True)
        browsers[kind] = seen = screenshot(folder / "report.html", jpg)
        rows.append([f"{kind}: {folder.name}", "-", "-", f"{(folder / 'report.html').stat().st_size / 2**20:.2f} MB",
                     "-", "-", len(seen["errors"]), len(seen["requests"]), f"{seen['open_seconds']:.2f}"])
    browser = browsers
    table = markdown_table(["run", "test items", "build report, s (median)", "report file", "read predictions.csv, s",
                            "fit, s", "console errors", "requests", "open in chromium, s"], rows)
    save_results("report", table, {"builds": builds, "size": size, "fit_seconds": fit_seconds, "cpus": os.cpu_count(),
                                   "browser": {**browser, "big": big_browser}})


if __name__ == "__main__":
    main()
