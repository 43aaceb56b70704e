"""``report.html``: written by fit from its saved files, rebuilt by ``transfuse report`` (also for a
run that stopped halfway), several runs side by side; the numbers behind it (bootstrap intervals,
calibration, mistakes); images, texts and clips shown inline; opened in real headless Chromium with
no console errors and no network requests."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from transfuse.data import load_image_folder, load_source
from transfuse.evaluate import classification_metrics
from transfuse.report import write_report
from transfuse.report.runfiles import Predictions, read_run
from transfuse.report.stats import bootstrap_intervals, calibration, confident_mistakes
from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, fit

from conftest import cli, tone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTIONS = ("The run", "Test metrics", "Confusion matrix", "Most confident mistakes", "Calibration",
            "The features the head reads")


def _fit(source, out, backbone="tiny_cnn", **kw):
    spec = FeaturizerSpec(backbone=backbone, runtime="torch", precision="fp32")
    return fit(FitRequest(source=source, featurizer=spec, output=OutputSpec(out), **kw))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A real small image run (tiny_cnn on 3 x 8 Fashion-MNIST PNGs, --auto: the search table too)."""
    from conftest import EXAMPLES

    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    for cls in ("bag", "sandal", "trouser"):
        (data / cls).mkdir(parents=True)
        for src in sorted((EXAMPLES / cls).glob("*.png"))[:8]:
            shutil.copy(src, data / cls / src.name)
    _fit(load_image_folder(data), root / "run", auto=True, cv=3)
    return root / "run"


def test_fit_writes_a_report_and_the_files_it_is_built_from(image_run):
    html = (image_run / "report.html").read_text()
    for section in (*SECTIONS, "What was tried"):
        assert section in html, section
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 5 and "data:image/jpeg;base64," in html  # figures, thumbnails
    with open(image_run / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["item", "true", "predicted"] and rows[0][3:] == ["p:bag", "p:sandal", "p:trouser"]
    assert all(Path(r[0]).is_absolute() and abs(sum(map(float, r[3:])) - 1) < 1e-4 for r in rows[1:])
    run = read_run(image_run)
    assert set(run.map["split"]) == {"train", "test"}
    for name in ("intervals.json", "per_class.csv", "confusion.csv", "mistakes.csv", "calibration.csv",
                 "candidates.csv"):
        assert (image_run / "report_files" / name).is_file(), name


def test_a_report_is_rebuilt_from_what_exists(image_run, tmp_path):
    """`transfuse report DIR` on a copy missing its predictions (a run stopped halfway) and with a
    corrupt map: the sections that need them are left out and the problem is named."""
    copy = tmp_path / "partial"
    shutil.copytree(image_run, copy)
    (copy / "predictions.csv").unlink()
    (copy / "map.csv").write_text("not,a\nmap")
    r = cli("report", str(copy))
    assert r.returncode == 0, r.stderr
    html = (copy / "report.html").read_text()
    assert "Test metrics" in html and "Most confident mistakes" not in html and "map.csv: KeyError" in html
    r = cli("report", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "not a folder" in r.stderr


def test_several_runs_side_by_side(image_run, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(image_run, other)
    path = write_report([image_run, other], tmp_path / "both.html")
    html = path.read_text()
    assert "Side by side" in html and html.count("<h2>") == 3
    assert (tmp_path / "report_files" / "second" / "confusion.csv").is_file()


def test_texts_and_clips_are_shown_inline(reviews, tmp_path):
    texts, _ = reviews
    _fit(texts, tmp_path / "text", backbone="tiny_text")
    html = (tmp_path / "text" / "report.html").read_text()
    assert 'class="text"' in html and "Most confident mistakes" in html
    root = tmp_path / "tones"
    for label, freqs in (("low", (200, 230, 260, 290, 320)), ("high", (2000, 2300, 2600, 2900, 3200))):
        (root / label).mkdir(parents=True)
        for f in freqs:
            tone(root / label / f"{f}.wav", f, seconds=0.4)
    fit(FitRequest(source=load_source(root), featurizer=FeaturizerSpec(backbone="logmel"),
                   output=OutputSpec(tmp_path / "audio")))
    assert "Test metrics" in (tmp_path / "audio" / "report.html").read_text()
    pred = read_run(tmp_path / "audio").predictions
    from transfuse.report.media import show

    assert show(pred.items[0], "audio").startswith('<audio controls preload="none" src="data:audio/wav;base64,')


def test_intervals_calibration_and_mistakes_on_known_numbers():
    rng = np.random.default_rng(0)
    n = 2000
    truth = rng.choice(["a", "b", "c"], n)
    confidence = rng.uniform(0.34, 1.0, n)
    right = rng.uniform(size=n) < confidence  # calibrated by construction
    other = {"a": "b", "b": "c", "c": "a"}
    predicted = np.where(right, truth, [other[t] for t in truth])
    scores = np.full((n, 3), 0.0)
    for i, p in enumerate(predicted):
        scores[i] = (1 - confidence[i]) / 2
        scores[i, "abc".index(p)] = confidence[i]
    pred = Predictions([f"x{i}" for i in range(n)], truth.astype(object), predicted.astype(object), ["a", "b", "c"],
                       scores, True)
    metrics = classification_metrics(truth, predicted, classes=["a", "b", "c"])
    ci = bootstrap_intervals(pred)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        low, high = ci[key]
        assert low < metrics[key] < high and high - low < 0.06, key
    assert calibration(pred)["ece"] < 0.03
    worst = confident_mistakes(pred, k=5)
    assert len(worst) == 5 and all(w["true"] != w["predicted"] for w in worst)
    assert [w["confidence"] for w in worst] == sorted((w["confidence"] for w in worst), reverse=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (./scripts/install-data.sh installs it)")
def test_the_report_opens_in_headless_chromium(image_run, tmp_path):
    """Real Chromium (Debian's, driven by Playwright): no console errors, no request beyond the file
    itself, figures decoded, and a screenshot that is not blank."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    page_file = image_run / "report.html"
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert errors == [] and requests == [] and broken == 0
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (900, 1280) and image.std() > 20 and (image < 128).mean() > 0.01
