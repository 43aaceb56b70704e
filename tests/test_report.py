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
    write_report([image_run, image_run], tmp_path / "twice" / "r.html")  # one folder twice: two columns of data
    parent = image_run.parent.name
    assert sorted(p.name for p in (tmp_path / "twice" / "report_files").iterdir()) == [f"{parent}-run",
                                                                                     f"{parent}-run-2"]


@pytest.fixture(scope="module")
def text_run(reviews, tmp_path_factory) -> Path:
    texts, _ = reviews
    out = tmp_path_factory.mktemp("report-text") / "run"
    _fit(texts, out, backbone="tiny_text")
    return out


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report-audio")
    for label, freqs in (("low", (200, 230, 260, 290, 320)), ("high", (2000, 2300, 2600, 2900, 3200))):
        (root / "tones" / label).mkdir(parents=True)
        for f in freqs:
            tone(root / "tones" / label / f"{f}.wav", f, seconds=0.4)
    fit(FitRequest(source=load_source(root / "tones"), featurizer=FeaturizerSpec(backbone="logmel"),
                   output=OutputSpec(root / "run")))
    return root / "run"


@pytest.fixture(scope="module")
def compare_run(image_run) -> Path:
    """`transfuse compare` (tiny_cnn: probe, from scratch, fine-tune head; one epoch) on the image
    run's data: the comparison's report and each fine-tuning run's own."""
    data, out = image_run.parent / "data", image_run.parent / "compare"
    r = cli("-q", "compare", str(data), "--backbone", "tiny_cnn", "--strategies", "head", "--epochs", "1",
            "--image-size", "32", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_texts_and_clips_are_shown_inline(text_run, audio_run):
    html = (text_run / "report.html").read_text()
    assert 'class="text"' in html and "Most confident mistakes" in html
    assert "Test metrics" in (audio_run / "report.html").read_text()
    from transfuse.report.media import show

    clip = read_run(audio_run).predictions.items[0]
    assert show(clip, "audio").startswith('<audio controls preload="none" src="data:audio/wav;base64,')


def test_compare_says_whether_transfer_pays_and_finetune_shows_its_curves(compare_run):
    html = (compare_run / "report.html").read_text()
    assert "Does transfer pay here?" in html and "paired bootstrap over the 6 test items" in html
    assert any(s in html for s in ("Transfer pays here by", "Transfer does not pay here"))
    assert 'href="probe/report.html"' in html and (compare_run / "report_files" / "compare.csv").is_file()
    tuned = (compare_run / "head" / "report.html").read_text()
    assert "Fine-tuning, epoch by epoch" in tuned and "Most confident mistakes" in tuned
    assert (compare_run / "head" / "report_files" / "curves.csv").is_file()


def test_evaluate_writes_a_report_of_every_item(image_run, tmp_path):
    data = image_run.parent / "data"
    r = cli("evaluate", str(image_run), str(data), "--report", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr
    assert "report: " in r.stdout
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "(n=24)" in html and "evaluated" in html and "tiny_cnn" in html
    r = cli("evaluate", str(image_run), str(data), "--report", str(image_run))
    assert r.returncode == 2 and "is a model directory" in r.stderr


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
def test_reports_open_in_headless_chromium(image_run, text_run, audio_run, compare_run, tmp_path):
    """Real Chromium (Debian's, driven by Playwright) opens the reports of real small runs (image,
    text, audio, a comparison, a fine-tuning): no console errors, no request beyond the file itself,
    every figure decoded, and a screenshot that is not blank."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    pages = {"image": image_run, "text": text_run, "audio": audio_run, "compare": compare_run,
             "finetune": compare_run / "head"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for kind, folder in pages.items():
            errors, requests = [], []
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto((folder / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
            shot = tmp_path / f"{kind}.png"
            page.screenshot(path=str(shot))
            page.close()
            assert errors == [] and requests == [], (kind, errors, requests)
            assert images and all(images), kind
            pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
            assert pixels.shape == (900, 1280) and pixels.std() > 20 and (pixels < 128).mean() > 0.01, kind
        browser.close()
