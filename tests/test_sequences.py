"""Sequences of feature frames: loading (.npy folders, .npz array files, bad items), recurrent sources
trained with train-source and transferred from with local:, on the real spoken-digit MFCC sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transfuse.backbones import create_backbone, get_spec
from transfuse.data import load_source
from transfuse.data.packaged import spoken_digits
from transfuse.errors import DataError
from transfuse.taps import pool_frames

from conftest import cli


def _digits_npz(path, digits, per_class: int, offset: int = 0):
    """A real array file: ``per_class`` spoken-digit MFCC sequences of each of ``digits``."""
    try:
        frames, labels = spoken_digits()
    except DataError as exc:
        pytest.skip(str(exc))
    keep = [i for d in digits for i in np.flatnonzero(labels == d)[offset: offset + per_class]]
    np.savez(path, X=np.concatenate([frames[i] for i in keep]), lengths=np.array([len(frames[i]) for i in keep]),
             y=labels[keep], classes=np.array([f"digit{d}" for d in range(10)]))
    return path


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFUSE_DATA", str(tmp_path / "data-home"))
    return {"TRANSFUSE_DATA": str(tmp_path / "data-home")}


def test_array_file_unpacks_once_into_class_folders(tmp_path, data_home):
    npz = _digits_npz(tmp_path / "digits.npz", [0, 1], 5)
    source = load_source(npz)
    assert source.kind == "sequence" and source.name == "digits" and source.classes == ["digit0", "digit1"]
    assert len(source) == 10 and all(p.endswith(".npy") for p in source.items)
    again = load_source(npz)
    assert again.items == source.items  # the same folder: unpacked once
    assert np.load(source.items[0]).shape[1] == 13


def test_bad_sequence_inputs_are_clear_errors(tmp_path, data_home):
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((5, 3)), lengths=np.array([2, 2]), y=np.array([0, 1]))
    with pytest.raises(DataError, match="add up to the 5 frames"):
        load_source(bad)
    np.savez(bad, X=np.zeros((5, 3)))
    with pytest.raises(DataError, match="lacks the arrays lengths, y"):
        load_source(bad)
    np.savez(bad, X=np.zeros((4, 3)), lengths=np.array([2, 2]), y=np.array([0, 1]), classes=np.array(["ok", "../up"]))
    with pytest.raises(DataError, match="usable as folder names; '../up'"):
        load_source(bad)
    np.savez(bad, X=np.zeros((4, 3)), lengths=np.array([2, 2]), y=np.array([0, 5]), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match="indices 0..1"):
        load_source(bad)
    folder = tmp_path / "seqs"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            np.save(folder / cls / f"{i}.npy", np.random.default_rng([ord(cls), i]).normal(size=(6 + i, 13)).astype(np.float32))
    np.save(folder / "a" / "object.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)  # a pickle inside
    np.save(folder / "b" / "nan.npy", np.full((4, 13), np.nan, dtype=np.float32))
    np.save(folder / "b" / "narrow.npy", np.zeros((4, 7), dtype=np.float32))
    np.savez(folder / "b" / "archive.npz", x=np.zeros(3))
    (folder / "b" / "archive.npz").rename(folder / "b" / "archive.npy")  # several arrays under an .npy name
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache"), **data_home}
    r = cli("fit", str(folder), "--backbone", "gru", "--weights", "random", env=env)
    assert r.returncode == 2 and "4 of 12 files could not be read as sequences" in r.stderr
    r = cli("fit", str(folder), "--backbone", "gru", "--weights", "random", "--skip-bad", "--test-size", "0.25",
            "--out", str(tmp_path / "model"), env=env)
    assert r.returncode == 0, r.stderr


def test_padding_never_changes_an_items_states():
    """Items batched with longer ones (zero padding after them) get the states they get alone."""
    backbone = create_backbone("lstm", weights="random")
    rng = np.random.default_rng(0)
    items = [torch.from_numpy(rng.normal(size=(n, 13)).astype(np.float32)) for n in (3, 9, 5)]
    padded = torch.zeros(3, 9, 13)
    for row, item in enumerate(items):
        padded[row, : len(item)] = item
    together = backbone.embed({"frames": padded, "lengths": torch.tensor([3, 9, 5])}, [0, 1, 2], ["rnn1", "rnn2"],
                              "last", "cpu")
    for row, item in enumerate(items):
        alone = backbone.embed({"frames": item[None], "lengths": torch.tensor([len(item)])}, [0], ["rnn1", "rnn2"],
                               "last", "cpu")
        for tap in ("rnn1", "rnn2"):
            assert torch.allclose(together[tap][row], alone[tap][0], atol=1e-5)
    frames = torch.arange(12.0).view(2, 3, 2)
    assert pool_frames(frames, torch.tensor([1, 3]), "last").tolist() == [[0.0, 1.0], [10.0, 11.0]]
    assert pool_frames(frames, torch.tensor([2, 3]), "avg").tolist() == [[1.0, 2.0], [8.0, 9.0]]


@pytest.mark.slow
def test_rnn_source_on_spoken_digits_transfers_to_new_digits(tmp_path, data_home):
    """The RNN pair on real data: a GRU trained on spoken digits 0-4 is a source for digits 5-9 (probe
    and fine-tuning through local:), and predict reads .npy items; lstm trains the same way."""
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache"), **data_home}
    source_npz = _digits_npz(tmp_path / "digits04.npz", range(5), 60)
    target_npz = _digits_npz(tmp_path / "digits59.npz", range(5, 10), 20)
    src = tmp_path / "gru-source"
    r = cli("train-source", str(source_npz), "--epochs", "8", "--out", str(src), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] > 0.6  # 5 digits, chance 0.2
    assert get_spec(f"local:{src}").tap_names == ["rnn1", "rnn2", "logits"]
    r = cli("fit", str(target_npz), "--backbone", f"local:{src}", "--layers", "rnn1,rnn2", "--pooling", "avg",
            "--out", str(tmp_path / "probe"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] > 0.5
    r = cli("finetune", str(target_npz), "--backbone", f"local:{src}", "--epochs", "3", "--probe-epochs", "1", "--out", str(tmp_path / "ft"),
            env=env)
    assert r.returncode == 0, r.stderr
    one = str(sorted((tmp_path / "data-home").rglob("*.npy"))[-1])
    r = cli("predict", str(tmp_path / "ft"), one, "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["label"].startswith("digit"), r.stderr
    r = cli("train-source", str(source_npz), "--arch", "lstm", "--epochs", "1", "--out", str(tmp_path / "lstm"),
            env=env)
    assert r.returncode == 0, r.stderr
    r = cli("train-source", str(source_npz), "--arch", "small-cnn", env=env)
    assert r.returncode == 2 and "use gru or lstm" in r.stderr


def test_recurrent_networks_export_one_sequence_per_run(tmp_path, data_home):
    """GRU and LSTM probes on real spoken-digit MFCC sequences export as one graph (frames in, the
    per-item normalisation inside) and give transfuse's probabilities; `transfuse predict` reads .npy
    items with the graph alone."""
    from transfuse.data import load_source
    from transfuse.export import export_model
    from transfuse.export.runtime import ExportedModel
    from transfuse.pipeline import load_model
    from transfuse.workflow import FeaturizerSpec, FitRequest, OutputSpec, fit

    source = load_source(_digits_npz(tmp_path / "digits.npz", [0, 1, 2], 12))
    for cell, layers, pooling in (("gru", "rnn1,rnn2", "last"), ("lstm", "rnn2,logits", "meanstd")):
        spec = FeaturizerSpec(backbone=cell, weights="random", layers=layers, pooling=pooling, precision="fp32")
        fit(FitRequest(source=source, featurizer=spec, output=OutputSpec(tmp_path / cell)))
        exported = export_model(tmp_path / cell, tmp_path / f"{cell}.onnx")
        assert exported.metadata["input"] == "frames" and "sequences" in exported.metadata["checked"]
        items = source.items[::5]
        got = ExportedModel(exported.path).predict_proba(items)
        np.testing.assert_allclose(got, load_model(tmp_path / cell, cache=False).predict_proba(items), atol=1e-4)
    r = cli("predict", str(tmp_path / "gru.onnx"), source.items[0], "--json", env=data_home)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["label"].startswith("digit"), r.stderr
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.workflow import finetune

    config = FinetuneConfig(backbone="gru", strategy="full", from_scratch=True, epochs=1, probe_epochs=0)
    finetune(source, config, OutputSpec(tmp_path / "tuned"), progress=False)
    exported = export_model(tmp_path / "tuned", tmp_path / "tuned.onnx")
    items = source.items[::5]
    np.testing.assert_allclose(ExportedModel(exported.path).predict_proba(items),
                               load_model(tmp_path / "tuned").predict_proba(items), atol=1e-4)
