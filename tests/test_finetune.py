"""Parameter-based transfer: strategies, the BatchNorm policy, resume, errors, saved models."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from transfuse.backbones import create_backbone
from transfuse.data import load_image_folder
from transfuse.errors import DataError, ModelDirError
from transfuse.finetune.strategy import Strategy, apply, parameter_groups, parse_strategy
from transfuse.finetune.train import FinetuneConfig, finetune_source
from transfuse.pipeline import load_model
from transfuse.workflow import evaluate_dir, predict_paths

from conftest import EXAMPLES


def tiny_cfg(**kw):
    base = dict(backbone="tiny_cnn", epochs=2, image_size=32, batch_size=8, lr=1e-2, probe_epochs=1, patience=10)
    return FinetuneConfig(**{**base, **kw})


def test_parse_strategy():
    assert parse_strategy("last:2") == Strategy("last", 2)
    assert parse_strategy("lp-ft") == Strategy("lp-ft")
    with pytest.raises(DataError, match="choose one of head, last:N, full, lp-ft, gradual"):
        parse_strategy("partial")
    with pytest.raises(DataError, match="whole number"):
        parse_strategy("last:x")


def test_groups_follow_the_efficientnet_blocks():
    groups = parameter_groups(create_backbone("efficientnet_lite0"))
    assert [g for g, _ in groups] == ["stem", *[f"blocks.{i}" for i in range(7)], "top", "classifier"]
    assert dict(groups)["stem"] == ["conv_stem", "bn1"] and dict(groups)["top"] == ["conv_head", "bn2"]


def test_schedules():
    assert [Strategy("lp-ft").trainable_at(e, 6, 2, 1) for e in range(4)] == [1, 1, 6, 6]
    assert [Strategy("gradual").trainable_at(e, 6, 1, 1) for e in range(7)] == [1, 2, 3, 4, 5, 6, 6]
    assert Strategy("last", 1).trainable_at(0, 6, 1, 1) == 3


def test_frozen_parts_keep_weights_and_batchnorm_statistics(image_folder, tmp_path):
    before = create_backbone("tiny_cnn").model.state_dict()
    finetune_source(load_image_folder(image_folder), tiny_cfg(strategy="head"), tmp_path / "head", progress=False)
    after = load_model(tmp_path / "head").model.state_dict()
    for key in ("stem.0.weight", "stem.1.running_mean", "stem.1.running_var", "blocks.1.1.running_mean"):
        assert torch.equal(before[key], after[key]), key  # frozen: weights AND BN statistics unchanged
    finetune_source(load_image_folder(image_folder), tiny_cfg(strategy="full"), tmp_path / "full", progress=False)
    full = load_model(tmp_path / "full").model.state_dict()
    assert not torch.equal(before["stem.1.running_mean"], full["stem.1.running_mean"])
    assert not torch.equal(before["stem.0.weight"], full["stem.0.weight"])


def test_apply_marks_requires_grad():
    bb = create_backbone("tiny_cnn")
    groups = parameter_groups(bb)
    frozen = apply(bb.model, groups, 2)  # classifier + the group below it
    trainable = {n for n, p in bb.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("classifier", "head_conv")) for n in trainable)
    assert "stem" in frozen


def test_saved_model_predicts_and_evaluates(image_folder, tmp_path):
    src = load_image_folder(image_folder)
    metrics = finetune_source(src, tiny_cfg(strategy="lp-ft", epochs=3), tmp_path / "m", progress=False)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert [p["kind"] for p in config["parts"]] == ["finetuned"] and (tmp_path / "m" / "logs" / "metrics.csv").is_file()
    assert (tmp_path / "m" / "checkpoints" / "last.ckpt").is_file()  # kept when the model is saved
    assert list((tmp_path / "m" / "logs").glob("events.out.tfevents.*"))  # TensorBoard (installed by the test extra)
    assert set(metrics) >= {"accuracy", "balanced_accuracy", "macro_f1", "train_seconds"}
    model = load_model(tmp_path / "m")
    records = predict_paths(model, src.items[:3])
    assert all(r["label"] in src.classes and abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in records)
    assert evaluate_dir(tmp_path / "m", src)["n"] == 24


def test_resume_continues_from_the_last_checkpoint(image_folder, tmp_path):
    src = load_image_folder(image_folder)
    finetune_source(src, tiny_cfg(strategy="full", epochs=2), tmp_path / "m", progress=False)
    resumed = finetune_source(src, tiny_cfg(strategy="full", epochs=4), tmp_path / "m", resume=True, progress=False)
    assert resumed["epochs_run"] == 4
    (tmp_path / "m" / "checkpoints" / "last.ckpt").write_bytes(b"garbage")
    with pytest.raises(ModelDirError, match="corrupt.*without --resume"):
        finetune_source(src, tiny_cfg(epochs=5), tmp_path / "m", resume=True, progress=False)
    with pytest.raises(ModelDirError, match="nothing to resume"):
        finetune_source(src, tiny_cfg(), tmp_path / "other", resume=True, progress=False)


def test_missing_class_in_training_split_is_reported_before_training(image_folder, tmp_path):
    src = load_image_folder(image_folder)
    src.splits = ["test" if lab == "bag" else "train" for lab in src.labels]
    with pytest.raises(DataError, match=r"classes \['bag'\] have no train rows"):
        finetune_source(src, tiny_cfg(), tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_pretrained_head_beats_scratch_on_real_fashion_images(tmp_path):
    """Real EfficientNet-Lite0 weights: a new output layer on frozen features learns; random init does not."""
    root = tmp_path / "data"
    for cls in ("bag", "sandal", "trouser"):  # every bundled image of 3 classes: 18 test items
        shutil.copytree(EXAMPLES / cls, root / cls)
    src = load_image_folder(root)
    cfg = dict(backbone="efficientnet_lite0", epochs=4, image_size=64, batch_size=8, lr=1e-2, patience=10,
               augment=False)
    head = finetune_source(src, FinetuneConfig(strategy="head", **cfg), tmp_path / "h", progress=False)
    scratch = finetune_source(src, FinetuneConfig(strategy="head", from_scratch=True, **cfg), tmp_path / "s",
                              progress=False)
    assert head["accuracy"] >= 0.8 and head["accuracy"] > scratch["accuracy"] + 0.2, (head["accuracy"],
                                                                                      scratch["accuracy"])


@pytest.mark.slow
def test_ddp_two_cpu_processes(image_folder, tmp_path):
    """Real DDP: Lightning re-runs the command as a second process, gloo all-reduces the gradients,
    only the first process saves; the saved model then predicts like any other. LP-FT, so groups
    frozen when DDP wraps the model are unfrozen later (DDP must sync them too)."""
    from conftest import cli

    out = tmp_path / "ddp"
    run = cli("-q", "finetune", str(image_folder), "--backbone", "tiny_cnn", "--strategy", "lp-ft", "--epochs", "2",
              "--probe-epochs", "1",
              "--image-size", "32", "--batch-size", "4", "--devices", "2", "--out", str(out), "--json",
              env={"CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # the worker process prints nothing
    metrics = json.loads(lines[0])
    assert metrics["devices"] == 2 and metrics["epochs_run"] == 2
    model = load_model(out)
    assert len(model.predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:3]])) == 3


def test_balanced_loss_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    from transfuse.finetune.train import _class_weights

    y = np.array([0] * 30 + [1] * 5 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert np.allclose(_class_weights("balanced", y, 3).numpy(), expected)
    assert _class_weights(None, y, 3) is None


def test_the_learning_curve_rule_stops_only_a_run_that_cannot_catch_up():
    from transfuse.finetune.callbacks import CannotCatchUp

    rule = CannotCatchUp(target=0.80, after=3)
    assert rule.verdict([0.5, 0.6], 10) is None  # too early to judge
    assert rule.verdict([0.5, 0.6, 0.7], 10) is None  # +0.05 an epoch reaches 1.05 by epoch 10
    assert rule.verdict([0.5, 0.5, 0.5, 0.5], 10).startswith("after epoch 4 of 10")  # flat, 0.3 short
    assert rule.verdict([0.5, 0.5, 0.5, 0.5], 4) is None  # the last epoch: nothing left to save
    assert rule.verdict([0.81, 0.70, 0.72, 0.74], 6) is None  # the best epoch already passed it
    assert CannotCatchUp(target=0.95, after=3).verdict([0.79, 0.70, 0.72, 0.74], 6) is not None


def test_a_run_that_cannot_reach_its_target_stops_early_and_keeps_its_best_epoch(image_folder, tmp_path):
    from transfuse.finetune.callbacks import CannotCatchUp

    rule = CannotCatchUp(target=1.01, after=3)  # no run reaches it
    metrics = finetune_source(load_image_folder(image_folder), tiny_cfg(strategy="lp-ft", epochs=8), tmp_path / "m",
                              progress=False, callbacks=(rule,))
    assert rule.stopped and 3 <= len(rule.curve) < 8, rule.curve  # stopped once the curve went flat
    assert rule.stopped.startswith(f"after epoch {len(rule.curve)} of 8") and metrics["epochs_run"] == len(rule.curve)
    assert load_model(tmp_path / "m").predict(load_image_folder(image_folder).items[:2]).shape == (2,)


@pytest.mark.slow
def test_ddp_across_two_nodes_started_by_hand(image_folder, tmp_path):
    """Two machines, simulated by two independent processes on this one: the same command with
    --num-nodes 2, NODE_RANK 0 and 1, MASTER_ADDR/MASTER_PORT (what docs/scale-out.md shows).
    LP-FT, so a frozen-then-unfrozen backbone trains under DDP; only node 0 saves and reports."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two-nodes"
    exe = str(Path(sys.executable).with_name("transfuse"))
    args = [exe, "-q", "finetune", str(image_folder), "--backbone", "tiny_cnn", "--strategy", "lp-ft", "--epochs", "2",
            "--probe-epochs", "1", "--image-size", "32", "--batch-size", "4", "--devices", "1", "--num-nodes", "2",
            "--out", str(out), "--json"]
    base = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    nodes = [subprocess.Popen(args, env={**base, "NODE_RANK": str(rank)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-2000:] for _, err in outputs]
    metrics = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert metrics["devices"] == 2 and metrics["epochs_run"] == 2  # world size 2: both nodes trained
    assert outputs[1][0].strip() == ""  # node 1 prints nothing
    assert len(load_model(out).predict([str(p) for p in sorted(image_folder.rglob("*.png"))[:3]])) == 3


@pytest.mark.parametrize("name", ["RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID"])
def test_only_the_first_process_of_a_launcher_prepares_the_run_folder(monkeypatch, name):
    from transfuse.finetune.train import _first_process

    for other in ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(other, raising=False)
    assert _first_process()
    monkeypatch.setenv(name, "0")
    assert _first_process()
    monkeypatch.setenv(name, "1")
    assert not _first_process()
