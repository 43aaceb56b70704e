"""The tfidf text baseline: fitted on the training split, saved without pickle, one flag away."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer

from transfuse.data import load_source
from transfuse.errors import DataError, ModelDirError, UnknownBackboneError
from transfuse.extract import extract_features
from transfuse.featurizers.tfidf import TfidfFeatures
from transfuse.parts import decode_strings, encode_strings
from transfuse.pipeline import load_model
from transfuse.workflow import compare_source, fit_source, predict_paths

from conftest import cli

EXAMPLE = Path(__file__).parents[1] / "examples" / "reviews.csv"


@pytest.fixture(scope="module")
def reviews():
    return load_source(EXAMPLE, text_column="review", label_column="department")


def test_rows_equal_sklearns_vectoriser(reviews):
    texts = reviews.items
    ours = TfidfFeatures().fit(texts[:200])
    ref = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(texts[:200])
    assert ours.meta_["vocabulary"] == ref.get_feature_names_out().tolist()
    np.testing.assert_allclose(ours.transform(texts[200:]).toarray(), ref.transform(texts[200:]).toarray(), atol=1e-6)
    few = TfidfFeatures().fit(texts[:12])  # tiny data: every term is kept, not only those in 2+ texts
    assert len(few.meta_["vocabulary"]) == len(TfidfVectorizer(ngram_range=(1, 2)).fit(texts[:12]).vocabulary_)
    unseen = ours.transform(["zyzzyva qwxj"])  # no known term: an all-zero row, not an error
    assert unseen.shape == (1, ours.n_features_out_) and unseen.nnz == 0


def test_fit_saves_vocabulary_and_predicts_the_same_after_loading(tmp_path, reviews):
    res = fit_source(reviews, backbone="tfidf", out_dir=tmp_path / "m", seed=0)
    assert 0.3 < res.metrics["accuracy"] < 1.0  # six departments, chance is 0.17
    vocabulary = decode_strings(load_file(str(tmp_path / "m" / "model.safetensors"))["features.vocabulary"])
    assert vocabulary == res.model.named_steps["features"].meta_["vocabulary"]
    assert len(vocabulary) == res.model.named_steps["features"].n_features_out_ > 500
    loaded = load_model(tmp_path / "m")
    texts = reviews.items[:30]
    np.testing.assert_allclose(loaded.predict_proba(texts), res.model.predict_proba(texts), atol=1e-6)
    records = predict_paths(loaded, ["The jeans fit well around the waist"])
    assert records[0]["text"].startswith("The jeans") and records[0]["label"] in reviews.classes


def test_vectoriser_is_fitted_on_the_training_split_only(tmp_path, reviews):
    res = fit_source(reviews, backbone="tfidf", save=False, seed=0)
    from transfuse.data.split import split_source

    train, _ = split_source(reviews, test_size=0.2, seed=0)
    alone = TfidfFeatures().fit([reviews.items[i] for i in train])
    assert res.model.named_steps["features"].meta_["vocabulary"] == alone.meta_["vocabulary"]


def test_options_it_cannot_take_are_clear_errors(tmp_path, reviews):
    for kwargs, flag in (({"layers": "features"}, "--layers"), ({"fusion": "concat"}, "--fusion"),
                         ({"auto": True}, "--auto"), ({"weights": "random"}, "--weights"),
                         ({"select": "pca:8"}, "--select"), ({"runtime": "onnx"}, "--runtime")):
        with pytest.raises(DataError, match=f"drop {flag}"):
            fit_source(reviews, backbone="tfidf", save=False, **kwargs)
    with pytest.raises(DataError, match="cannot be fused"):
        fit_source(reviews, backbone="minilm_l6,tfidf", save=False)
    with pytest.raises(DataError, match="knn head cannot read sparse"):
        fit_source(reviews, backbone="tfidf", head="knn", save=False)
    with pytest.raises(UnknownBackboneError, match="fitted on the training data, not a network"):
        extract_features(reviews.items[:3], backbone="tfidf")
    with pytest.raises(DataError, match="cannot be fine-tuned"):
        compare_source(reviews, tmp_path / "c", backbone="tfidf")
    with pytest.raises(DataError, match="needs at least 2"):
        TfidfFeatures().fit(["only one"])


def test_broken_vocabulary_is_a_clear_error(tmp_path, reviews):
    fit_source(reviews, backbone="tfidf", out_dir=tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    arrays = load_file(str(weights))
    save_file({**arrays, "features.vocabulary": encode_strings(["just", "three", "terms"])}, str(weights))
    with pytest.raises(ModelDirError, match="idf weights for 3 terms"):
        load_model(tmp_path / "m")
    save_file({k: v for k, v in arrays.items() if k != "features.vocabulary"}, str(weights))
    with pytest.raises(ModelDirError, match="lacks the arrays vocabulary of part 'features'"):
        load_model(tmp_path / "m")


def test_format_3_tfidf_model_with_its_vocabulary_file_still_loads(tmp_path):
    legacy = Path(__file__).parent / "data" / "legacy" / "v3" / "tfidf"
    shutil.copytree(legacy, tmp_path / "m")
    expected = json.loads((legacy / "expected.json").read_text())
    np.testing.assert_allclose(load_model(tmp_path / "m").predict_proba(expected["inputs"]),
                               expected["probabilities"], atol=1e-9)
    (tmp_path / "m" / "vocabulary.json").unlink()
    with pytest.raises(ModelDirError, match="no vocabulary.json"):
        load_model(tmp_path / "m")


def test_cli_fit_tfidf_and_predict(tmp_path):
    res = cli("fit", str(EXAMPLE), "--label-column", "rating", "--backbone", "tfidf", "--head", "svm",
              "--out", str(tmp_path / "m"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy"] > 0.2
    (tmp_path / "new.txt").write_text("Love it, perfect fit\nCheap fabric, returned it\n")
    res = cli("predict", str(tmp_path / "m"), str(tmp_path / "new.txt"), "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) == 2
    res = cli("backbones")
    assert "tfidf" in res.stdout
