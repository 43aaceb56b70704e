"""``transfuse export``: a saved model as one ONNX graph whose outputs equal transfuse's own (eager
fp32) on held-out real images, for each head, fusion and selection kind that exports; the exported
file predicted by ``transfuse predict model.onnx`` without torch; clear refusals. Real Fashion-MNIST
PNGs; tiny_cnn for the many kinds, real Lite0 weights for the end-to-end path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from transfuse.data import load_image_folder, load_source
from transfuse.errors import DataError
from transfuse.export import export_model
from transfuse.export.runtime import ExportedModel
from transfuse.pipeline import load_model
from transfuse.recipe import Recipe
from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, SplitSpec, fit

from conftest import EXAMPLES, cli, needs_drums, tone

TINY = "tiny_cnn"


def _fit(source, out, backbone=TINY, layers=None, pooling=None, **recipe):
    spec = FeaturizerSpec(backbone=backbone, layers=layers, pooling=pooling, runtime="torch", precision="fp32")
    fit(FitRequest(source=source, featurizer=spec, recipe=Recipe(**recipe), output=OutputSpec(out, force=True)))
    return out


def _agree(model_dir, onnx_path, items, tol=1e-4):
    """The exported graph's outputs on real images equal the model directory's, eager fp32."""
    exported = ExportedModel(onnx_path)
    reference = load_model(model_dir, cache=False)  # the engine it was fitted with: eager fp32 here
    ok, got = exported.scores(items)
    assert ok.all()
    want = reference.predict_proba(items) if exported.has_proba else reference.decision_function(items)
    want = np.asarray(want) if np.ndim(want) == 2 else np.column_stack([-np.asarray(want), np.asarray(want)])
    np.testing.assert_allclose(got, want, atol=tol)
    assert list(exported.predict(items)) == list(reference.predict(items))


CASES = {  # name: (layers, pooling, recipe)
    "one layer, logreg": (None, None, {}),
    "four layers fused, pca, logreg": ("stem,blocks.1,features,logits", None, {"fusion": "concat", "select": "pca:0.95"}),
    "two layers, group lasso, variance, svm": ("blocks.1,features", "gem", {"fusion": "concat", "select": "group-lasso:1,variance", "head": "svm"}),
    "kbest, ridge": ("blocks.1,features", "avgmax", {"fusion": "concat", "select": "kbest:20", "head": "ridge"}),
    "l1, mlp": ("blocks.1,features", "max", {"fusion": "concat", "select": "l1:0.5", "head": "mlp", "head_params": {"hidden": 16}}),
    "weighted fusion": ("blocks.1,features", None, {"fusion": "weighted"}),
    "knn": (None, None, {"head": "knn"}),
    "knn, euclidean, uniform": (None, None, {"head": "knn", "head_params": {"metric": "euclidean", "weights": "uniform", "n_neighbors": 3}}),
    "gated fusion": ("stem,blocks.1,features", None, {"fusion": "gated"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_exportable_kind_gives_transfuses_outputs(case, image_folder, tmp_path):
    layers, pooling, recipe = CASES[case]
    source = load_image_folder(image_folder)
    model_dir = _fit(source, tmp_path / "m", layers=layers, pooling=pooling, **recipe)
    exported = export_model(model_dir, tmp_path / "m.onnx")
    assert exported.metadata["classes"] == ["bag", "sandal", "trouser"]
    assert exported.metadata["checked"].startswith("max difference")
    assert json.loads(exported.sidecar.read_text())["image_size"] == "32"
    held_out = sorted(str(p) for p in (EXAMPLES / "bag").glob("*.png"))[8:12]  # not in the training copy
    _agree(model_dir, exported.path, held_out + source.items[:4])


def test_a_graph_that_disagrees_with_transfuse_is_not_written(image_folder, tmp_path, monkeypatch):
    """The check before writing compares the head's input too (probabilities of odd images can be
    saturated): an exporter that forgets the fusion's block scaling is caught."""
    import transfuse.export as export
    from transfuse.export import steps

    model_dir = _fit(load_image_folder(image_folder), tmp_path / "m", layers="stem,features", fusion="concat")
    table = dict(export.exporters())
    table["concat"] = lambda graph, part, x: graph.affine(x, part.state_["mean"], None, "wrong")
    monkeypatch.setattr(export, "exporters", lambda: table)
    with pytest.raises(DataError, match="disagrees with transfuse"):
        export_model(model_dir, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and steps.concat is not table["concat"]


def test_another_opset_is_honoured_by_every_piece(image_folder, reviews, tmp_path):
    """--opset 18 (reductions take their axes as an input from 18 on): the backbones' own graphs are
    exported at it too, so the merged graph is valid and still agrees."""
    import onnx

    source = load_image_folder(image_folder)
    model_dir = _fit(source, tmp_path / "img", layers="blocks.1,features", pooling="gem", fusion="concat", head="knn")
    exported = export_model(model_dir, tmp_path / "img.onnx", opset=18)
    assert onnx.load(str(exported.path)).opset_import[0].version == 18
    _agree(model_dir, exported.path, source.items[:6])
    texts, new_texts = reviews
    spec = FeaturizerSpec(backbone="tiny_text", pooling="max", runtime="torch", precision="fp32")
    fit(FitRequest(source=texts, featurizer=spec, output=OutputSpec(tmp_path / "txt")))
    _agree(tmp_path / "txt", export_model(tmp_path / "txt", tmp_path / "txt.onnx", opset=18).path, new_texts[:5])


def test_two_classes_export_with_one_score(image_folder, tmp_path):
    import shutil

    shutil.rmtree(image_folder / "trouser")
    source = load_image_folder(image_folder)
    for head in ("logreg", "svm"):
        model_dir = _fit(source, tmp_path / head, head=head)
        exported = export_model(model_dir, tmp_path / f"{head}.onnx")
        _agree(model_dir, exported.path, source.items)


@pytest.mark.slow
def test_a_fine_tuned_network_exports_alone_with_tta_and_in_an_ensemble(image_folder, tmp_path):
    from transfuse.finetune.train import FinetuneConfig, finetune_source
    from transfuse.modeldir import load_parts, save_parts

    source = load_image_folder(image_folder)
    cfg = FinetuneConfig(backbone=TINY, strategy="lp-ft", epochs=2, image_size=32, batch_size=8, probe_epochs=1)
    finetune_source(source, cfg, tmp_path / "ft", progress=False)
    exported = export_model(tmp_path / "ft", tmp_path / "ft.onnx")
    _agree(tmp_path / "ft", exported.path, source.items[:8])
    (_, model), = load_parts(tmp_path / "ft")[0]
    model.tta = True
    save_parts([("model", model)], tmp_path / "tta")
    _agree(tmp_path / "tta", export_model(tmp_path / "tta", tmp_path / "tta.onnx").path, source.items[:8])
    # a probe and the network averaged, as `auto` keeps them: two inputs (Lite0's probe reads a 224 px
    # centre crop, the network the whole image at 32 px), one graph
    from transfuse.ensemble import EnsembleModel

    probe = load_model(_fit(source, tmp_path / "probe", backbone="efficientnet_lite0"))
    save_parts([("model", EnsembleModel([probe, model], weights=[0.3, 0.7]))], tmp_path / "both")
    exported = export_model(tmp_path / "both", tmp_path / "both.onnx")
    assert sorted(exported.metadata["inputs"]) == ["pixels", "pixels_1"]
    _agree(tmp_path / "both", exported.path, source.items[:8])


@pytest.mark.slow
def test_real_lite0_model_exports_and_predicts_without_torch(tmp_path):
    """The bundled example on real Lite0 weights: exported, then `transfuse predict model.onnx` in a
    fresh process gives transfuse's labels and probabilities and imports no torch."""
    source = load_image_folder(EXAMPLES)
    model_dir = _fit(source, tmp_path / "lite0", backbone="efficientnet_lite0", layers="blocks.5,features",
                     fusion="concat")
    r = cli("export", str(model_dir), "--out", str(tmp_path / "lite0.onnx"))
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and (tmp_path / "lite0.json").is_file()
    items = source.items[::10]
    _agree(model_dir, tmp_path / "lite0.onnx", items)
    code = ("import sys, json; from transfuse.cli import main; sys.argv = ['transfuse'] + sys.argv[1:]; main(); "
            "print(json.dumps(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "lite0.onnx"), *items, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    records_line, imported_line = run.stdout.strip().splitlines()[-2:]
    assert json.loads(imported_line) == []
    reference = load_model(model_dir, runtime="torch", precision="fp32", cache=False)
    assert [r["label"] for r in json.loads(records_line)] == list(reference.predict(items))


@pytest.mark.slow
def test_two_real_backbones_fused_export_as_one_graph(image_folder, tmp_path):
    """Lite0's conv maps and DINOv2's tokens (after its class token), avg+max pooled, fused: one
    pixels input feeds both (they resize and crop alike), on real Fashion-MNIST images."""
    source = load_image_folder(image_folder)
    model_dir = _fit(source, tmp_path / "m", backbone="efficientnet_lite0,dinov2_vits14", pooling="avgmax",
                     fusion="concat")
    exported = export_model(model_dir, tmp_path / "m.onnx")
    assert list(exported.metadata["inputs"]) == ["pixels"]
    _agree(model_dir, exported.path, source.items[::4])


@pytest.mark.parametrize("backbone,layers,pooling,fusion", [
    ("tiny_text", "embeddings,features", "avgmax", "concat"), ("tiny_text", None, "cls", None),
    ("tiny_text", "embeddings,layer.1,features", None, "scalar-mix"),
    pytest.param("minilm_l6", None, None, None, marks=pytest.mark.slow)])
@pytest.mark.slow
def test_a_text_model_exports_with_its_tokenizer(backbone, layers, pooling, fusion, reviews, tmp_path):
    """Token ids in, the tokenizer beside (m.tokenizer.json); the graph reads each text as transfuse does (one
    window, specials around, long texts cut) and gives its probabilities, on real reviews
    (MiniLM: real weights)."""
    source, new_texts = reviews
    recipe = {"fusion": fusion} if fusion else {}
    spec = FeaturizerSpec(backbone=backbone, layers=layers, pooling=pooling, runtime="torch", precision="fp32")
    fit(FitRequest(source=source, featurizer=spec, recipe=Recipe(**recipe), output=OutputSpec(tmp_path / "m")))
    exported = export_model(tmp_path / "m", tmp_path / "out" / "m.onnx")
    assert (tmp_path / "out" / "m.tokenizer.json").is_file() and "input_ids" in exported.metadata["preprocessing"]
    _agree(tmp_path / "m", exported.path, new_texts + [" ".join(["long"] * 700)])


def test_a_fine_tuned_text_network_exports_with_its_tokenizer(reviews, tmp_path):
    from transfuse.finetune.train import FinetuneConfig, finetune_source

    source, new_texts = reviews
    finetune_source(source, FinetuneConfig(backbone="tiny_text", strategy="full", epochs=1, batch_size=16),
                    tmp_path / "ft", progress=False)
    exported = export_model(tmp_path / "ft", tmp_path / "out" / "ft.onnx")
    assert (tmp_path / "out" / "ft.tokenizer.json").is_file()
    _agree(tmp_path / "ft", exported.path, new_texts + [" ".join(["long"] * 700)])


def test_int8_is_measured_on_the_unseen_items_and_refused_beyond_the_tolerance(image_folder, tmp_path, reviews):
    """Static int8 for an image graph (calibrated on training items), dynamic for a text graph; the
    accuracy before and after is measured on the items the model was not trained on; a drop over
    --max-drop writes nothing."""
    from transfuse.export.quantize import quantize_int8

    source = load_image_folder(image_folder)
    model_dir = _fit(source, tmp_path / "m", layers="blocks.1,features", fusion="concat")
    exported = export_model(model_dir, tmp_path / "m.onnx")
    q = quantize_int8(exported.path, tmp_path / "m.int8.onnx", model_dir, source, max_drop=1.0)
    assert q.path.is_file() and q.method.startswith("static") and q.n_test + q.n_calibration == 24
    assert 0 <= q.int8_accuracy <= 1 and ExportedModel(q.path).predict(source.items[:3]).shape == (3,)
    with pytest.raises(DataError, match="nothing was written"):
        quantize_int8(exported.path, tmp_path / "refused.onnx", model_dir, source, max_drop=-1.0)
    assert not (tmp_path / "refused.onnx").exists()
    texts, _ = reviews
    spec = FeaturizerSpec(backbone="tiny_text", runtime="torch", precision="fp32")
    fit(FitRequest(source=texts, featurizer=spec, output=OutputSpec(tmp_path / "t")))
    exported = export_model(tmp_path / "t", tmp_path / "t" / "out" / "t.onnx")
    q = quantize_int8(exported.path, tmp_path / "q" / "t.int8.onnx", tmp_path / "t", texts, max_drop=1.0)
    assert q.method.startswith("dynamic") and (tmp_path / "q" / "t.int8.tokenizer.json").is_file()
    r = cli("export", str(tmp_path / "t"), "--out", str(tmp_path / "x.onnx"), "--quantize", "int8")
    assert r.returncode != 0 and "needs --data" in r.stderr


AUDIO = {"logmel": ("mfcc,features", None), "speech_embedding": (None, "max"),
         "sound_effects": ("block2,features", "avg")}


@needs_drums
@pytest.mark.parametrize("backbone", list(AUDIO))
def test_audio_models_export_waveform_in(backbone, drum_folder, tmp_path):
    """Each built-in audio encoder on its real weights, fitted on real drum hits: the graph takes one
    clip's waveform (decoded, down-mixed and resampled as transfuse does; the frozen speech-embedding
    graph merged as it is, Loop and all) and gives transfuse's probabilities; `transfuse predict
    model.onnx` reads clips; dynamic int8 is measured like the others."""
    from transfuse.export.quantize import quantize_int8

    layers, pooling = AUDIO[backbone]
    source = load_source(drum_folder)
    spec = FeaturizerSpec(backbone=backbone, layers=layers, pooling=pooling, precision="fp32")
    fit(FitRequest(source=source, featurizer=spec, output=OutputSpec(tmp_path / "m")))
    exported = export_model(tmp_path / "m", tmp_path / "m.onnx")
    assert exported.metadata["input"] == "waveform" and "one clip per run" in exported.metadata["preprocessing"]
    short = tone(tmp_path / "short.wav", 330, seconds=0.02, channels=1)  # shorter than any encoder's window
    _agree(tmp_path / "m", exported.path, source.items[::3] + [str(short)])
    r = cli("predict", str(exported.path), source.items[0], str(short), "--json")
    assert r.returncode == 0, r.stderr
    assert [rec["label"] for rec in json.loads(r.stdout)][0] in {"kick", "snare", "hihat"}
    if backbone == "logmel":
        q = quantize_int8(exported.path, tmp_path / "m.int8.onnx", tmp_path / "m", source, max_drop=1.0)
        assert q.method.startswith("dynamic") and 0 <= q.int8_accuracy <= 1


def test_a_hub_speech_encoder_exports(tiny_wav2vec2, tmp_path):
    """A transformers speech encoder (a tiny wav2vec2: normalised clip, conv feature encoder,
    transformer layers) exports per clip and agrees with transfuse."""
    root = tmp_path / "tones"
    for label, freqs in (("low", (200, 250, 300)), ("high", (2000, 2500, 3000))):
        (root / label).mkdir(parents=True)
        for f in freqs:
            tone(root / label / f"{f}.wav", f, seconds=0.3 + f / 10000)
    source = load_source(root)
    spec = FeaturizerSpec(backbone=f"hf:{tiny_wav2vec2}", layers="layer.1,features", precision="fp32")
    fit(FitRequest(source=source, featurizer=spec, split=SplitSpec(test_size=0.34), output=OutputSpec(tmp_path / "m")))
    exported = export_model(tmp_path / "m", tmp_path / "m.onnx")
    _agree(tmp_path / "m", exported.path, source.items)


def test_what_does_not_export_is_refused_with_the_reason(tmp_path, image_folder):
    from transfuse.data.source import Source

    texts = Source(name="t", kind="text", items=["good shoe", "bad shoe", "great bag", "awful bag"] * 3,
                   labels=["pos", "neg", "pos", "neg"] * 3)
    fit(FitRequest(source=texts, featurizer=FeaturizerSpec(backbone="tfidf"), output=OutputSpec(tmp_path / "tf")))
    with pytest.raises(DataError, match="TF-IDF"):
        export_model(tmp_path / "tf", tmp_path / "tf.onnx")
    model_dir = _fit(load_image_folder(image_folder), tmp_path / "knn", head="knn", head_params={"metric": "manhattan"})
    with pytest.raises(DataError, match="does not export"):
        export_model(model_dir, tmp_path / "knn.onnx")
    assert not (tmp_path / "knn.onnx").exists()
    chunked = Source(name="c", kind="text", items=texts.items, labels=texts.labels)
    spec = FeaturizerSpec(backbone="tiny_text", long_text="chunk")
    fit(FitRequest(source=chunked, featurizer=spec, output=OutputSpec(tmp_path / "chunk")))
    with pytest.raises(DataError, match="reads one window per text"):
        export_model(tmp_path / "chunk", tmp_path / "chunk.onnx")
    fit(FitRequest(source=texts, featurizer=FeaturizerSpec(backbone="use_multilingual"),
                   output=OutputSpec(tmp_path / "use")))
    with pytest.raises(DataError, match="use_multilingual cannot be exported: a frozen encoder computed in numpy"):
        export_model(tmp_path / "use", tmp_path / "use.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(DataError, match="not a readable ONNX file"):
        ExportedModel(bad)


@pytest.mark.slow
def test_the_standalone_example_runs_in_a_fresh_environment_without_torch(image_folder, tmp_path):
    """examples/predict_onnx.py in a new virtual environment holding only onnxruntime, numpy and
    pillow gives transfuse's labels (a Lite0 probe: a 224 px centre crop after a bicubic resize)."""
    import venv

    from conftest import REPO

    source = load_image_folder(image_folder)
    model_dir = _fit(source, tmp_path / "m", backbone="efficientnet_lite0")
    exported = export_model(model_dir, tmp_path / "m.onnx")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "onnxruntime", "numpy", "pillow"],
                             capture_output=True, text=True, timeout=600)
    if install.returncode:
        pytest.skip(f"cannot install onnxruntime into a new environment here: {install.stderr[-300:]}")
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    items = source.items[::3]
    run = subprocess.run([str(python), str(REPO / "examples" / "predict_onnx.py"), str(exported.path), *items],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    labels = [line.split("\t")[1] for line in run.stdout.strip().splitlines()]
    reference = load_model(model_dir, runtime="torch", precision="fp32", cache=False)
    assert labels == list(reference.predict(items))
