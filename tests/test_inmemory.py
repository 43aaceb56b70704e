"""In-memory inputs (PIL images, arrays, tensors, bytes) give the features of the files they came from."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.pipeline import make_pipeline

from transfuse.data import load_image_folder
from transfuse.data.inmemory import as_list, item_files
from transfuse.errors import DataError
from transfuse.featurizers import FeatureExtractor
from transfuse.heads import LogisticHead
from transfuse.pipeline import load_model, save_model


def _extractor(cache_dir: str) -> FeatureExtractor:
    return FeatureExtractor(backbone="tiny_cnn", layers="features", cache=cache_dir, runtime="torch", precision="fp32")


def test_every_in_memory_form_gives_the_features_of_its_file(image_folder, cache_dir):
    import torch

    path = sorted(image_folder.rglob("*.png"))[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    forms = [Image.open(path), rgb, rgb.astype(np.float32) / 255, torch.from_numpy(rgb.copy()).permute(2, 0, 1),
             path.read_bytes(), rgb[:, :, :1].copy()]
    ext = _extractor(cache_dir)
    want = ext.fit_transform([str(path)])
    got = ext.transform(forms)
    np.testing.assert_allclose(got[:5], np.repeat(want, 5, axis=0), rtol=1e-6, atol=1e-6)
    assert got.shape == (6, want.shape[1]) and np.isfinite(got).all()  # one channel: grey, read as RGB


def test_a_loaded_model_predicts_arrays_and_the_same_array_is_a_cache_hit(image_folder, cache_dir, tmp_path):
    src = load_image_folder(image_folder)
    model = make_pipeline(_extractor(cache_dir), LogisticHead()).fit(src.items, src.labels)
    loaded = load_model(save_model(model, tmp_path / "m"), cache=cache_dir)
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in src.items[:4]])  # N x H x W x 3
    assert list(loaded.predict(arrays)) == list(model.predict(src.items[:4]))
    from transfuse.extract import extract_features

    with item_files(arrays, "image") as paths:
        again = extract_features(paths, backbone="tiny_cnn", layers="features", cache=cache_dir, runtime="torch",
                                 precision="fp32")
    assert again.n_extracted == 0 and again.n_cached == 4
    assert not any(Path(p).exists() for p in paths)  # the staging folder is gone


@pytest.mark.parametrize("bad, match", [
    (np.full((8, 8, 3), 2.0, np.float32), "values in \\[0, 1\\]"),
    (np.full((8, 8, 3), 300, np.int64), "integer image array must hold values in 0-255"),
    (np.ones((8, 8), bool), "must hold numbers"),
    (np.zeros((8, 8, 5), np.uint8), "H x W or H x W x 1/3/4"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
    ({"not": "an image"}, "an image model takes"),
])
def test_bad_in_memory_images_get_a_clear_error(cache_dir, bad, match):
    with pytest.raises(DataError, match=match):
        _extractor(cache_dir).fit_transform([bad])


def test_texts_stay_texts_and_other_things_are_refused():
    with item_files(["a review", "another"], "text") as items:
        assert items == ["a review", "another"]
    with pytest.raises(DataError, match="a text model takes strings"):
        with item_files(["fine", np.zeros(3)], "text"):
            pass
    assert as_list("one text") == ["one text"] and len(as_list(np.zeros((3, 8, 8)))) == 3


def test_a_lone_image_is_one_item_and_a_stack_is_many():
    import torch

    image = np.zeros((28, 28, 3), np.uint8)
    assert len(as_list(image)) == 1 and len(as_list(image[:, :, 0])) == 1
    assert len(as_list(torch.zeros(3, 28, 28))) == 1 and len(as_list(np.zeros((6, 28, 28), np.uint8))) == 6
    assert len(as_list(Image.new("RGB", (8, 8)))) == 1 and len(as_list(bytearray(b"abc"))) == 1
    assert as_list(np.array([["good film"], ["bad film"]]), "text") == ["good film", "bad film"]  # a table's column
    assert len(as_list(np.zeros((40, 13), np.float32), "sequence")) == 1


def test_integer_images_and_unreadable_items_are_named_by_position(image_folder, cache_dir):
    path = sorted(image_folder.rglob("*.png"))[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    ext = _extractor(cache_dir)
    np.testing.assert_allclose(ext.fit_transform([rgb.astype(np.int64)]), ext.transform([rgb]), rtol=1e-6)
    from transfuse.errors import CorruptInputError

    with pytest.raises(CorruptInputError, match="item 1 \\(bytes\\)") as info:
        ext.transform([rgb, b"not an image", str(path)])
    assert "transfuse-items-" not in str(info.value)
    skipped = ext.set_params(on_error="skip").transform([rgb, b"not an image"])
    assert np.isnan(skipped[1]).all() and np.isfinite(skipped[0]).all()
