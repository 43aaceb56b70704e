"""The real console script in subprocesses: exit codes, one-line errors, files written."""

import csv
import json

import pytest

from conftest import cli


def test_fit_predict_evaluate_roundtrip(image_folder, tmp_path):
    model = tmp_path / "model"
    r = cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--layers", "blocks.1,features",
            "--out", str(model), "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and f"model saved to {model}" in r.stdout.replace("\n", "")
    assert json.loads((model / "metrics.json").read_text())["split"] == {"train": 18, "test": 6, "seed": 1,
                                                                        "test_size": 0.2}
    out_csv = tmp_path / "pred.csv"
    r = cli("-q", "predict", str(model), str(image_folder / "bag"), "--out", str(out_csv))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 8 and set(rows[0]) == {"path", "label", "p_bag", "p_sandal", "p_trouser"}
    r = cli("-q", "evaluate", str(model), str(image_folder), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 24


def test_layers_backbones_and_cache_commands(tmp_path):
    r = cli("layers", "tiny_cnn", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["blocks.1"]["shape"] == [24, 8, 8] and rows["blocks.1"]["dim"] == 24
    assert cli("backbones").returncode == 0
    env = {"TRANSFUSE_CACHE": str(tmp_path / "c")}
    assert cli("cache", "ls", "--json", env=env).stdout.strip() == "[]"
    r = cli("cache", "prune", "--all", env=env)
    assert r.returncode == 0 and "removed 0 feature sets" in r.stdout


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_give_one_line_errors(image_folder, tmp_path):
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "resnet9000"), "unknown backbone 'resnet9000'")
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--layers", "conv9"),
                   "no layer 'conv9'", "transfuse layers tiny_cnn")
    one_line_error(cli("-q", "fit", str(tmp_path / "missing")), "data folder not found")
    one_line_error(cli("-q", "predict", str(tmp_path), str(image_folder)), "no config.json")
    (image_folder / "bag" / "bad.png").write_text("not a png")
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn"), "bad.png", "--skip-bad")
    for f in (image_folder / "sandal").glob("*.png"):
        f.unlink()
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn"), "sandal", "--skip-bad")
    r = cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--skip-bad", "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable files" in r.stderr and "sandal" in r.stderr


def test_usage_errors_exit_2():
    assert cli("fit", "--no-such-flag").returncode == 2
    assert cli("--help").returncode == 0
    from transfuse import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"transfuse {__version__}"


@pytest.mark.slow
def test_fusion_selection_flags_and_search(image_folder, tmp_path):
    model = tmp_path / "fused"
    r = cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--layers", "blocks.0,blocks.1,features",
            "--fusion", "weighted", "--select", "group-lasso:2,pca:0.95", "--out", str(model), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recipe"]["fusion"] == "weighted"
    assert cli("-q", "predict", str(model), str(image_folder / "bag")).returncode == 0
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--fusion", "attention"),
                   "unknown fusion 'attention'")
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--select", "lasso"),
                   "unknown selection 'lasso'")
    r = cli("-q", "search", str(image_folder), "--backbone", "tiny_cnn", "--cv", "3", "--out", str(tmp_path / "s"),
            "--class-weight", "balanced", "--metric", "macro_f1")
    assert r.returncode == 0, r.stderr
    assert "winner:" in r.stdout and "macro f1 over 3 folds" in r.stdout and (tmp_path / "s" / "search.json").is_file()
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())["recipe"]
    assert saved["head_params"]["class_weight"] == "balanced"  # every searched recipe carried it; the winner too
    one_line_error(cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--class-weight", "heavy"),
                   "--class-weight")
    one_line_error(cli("-q", "search", str(image_folder), "--backbone", "tiny_cnn", "--metric", "auc"), "--metric")


def test_finetune_command_and_its_errors(image_folder, tmp_path):
    model = tmp_path / "ft"
    args = ["-q", "finetune", str(image_folder), "--backbone", "tiny_cnn", "--image-size", "32", "--epochs", "2",
            "--out", str(model)]
    r = cli(*args[1:], "--strategy", "last:1", "--class-weight", "balanced", "--json")  # logging on, not a terminal
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epochs_run"] == 2  # stdout holds the JSON alone
    assert "learning rates" in r.stderr and "epoch 2/2:" in r.stderr and "val acc" in r.stderr
    assert "best: epoch" in r.stderr and "\r" not in r.stderr  # log lines, no bar frames
    assert '"class_weight": "balanced"' in (model / "config.json").read_text()  # saved with the run's config
    assert cli("-q", "predict", str(model), str(image_folder / "bag")).returncode == 0
    assert json.loads(cli("-q", "evaluate", str(model), str(image_folder), "--json").stdout)["n"] == 24
    one_line_error(cli(*args, "--strategy", "some"), "unknown strategy 'some'")
    (model / "checkpoints" / "last.ckpt").write_bytes(b"broken")
    one_line_error(cli(*args, "--strategy", "last:1", "--resume"), "corrupt")


def test_one_flag_means_one_thing_in_every_command():
    """Flags come from one vocabulary (transfuse.cli.options): the same name has the same help,
    hence the same meaning, wherever it appears; search is fit without the recipe flags."""
    import typer.main

    from transfuse.cli import app

    group = typer.main.get_command(app)
    helps: dict[str, set[str]] = {}
    flags: dict[str, set[str]] = {}
    for name, command in group.commands.items():
        for param in getattr(command, "params", []):
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and param.help and not getattr(param, "hidden", False):
                    helps.setdefault(opt, set()).add(param.help)
                    flags.setdefault(name, set()).add(opt)
    own_meaning = {"--out"}  # a model folder, or the file predictions and metrics go to
    assert {opt: h for opt, h in helps.items() if len(h) > 1 and opt not in own_meaning} == {}
    assert flags["fit"] - flags["search"] == {"--fusion", "--select", "--head-param", "--auto"}
    assert {"--precision", "--workers", "--batch-size"} <= flags["finetune"] & flags["fit"]


def test_finetune_takes_the_same_precision_names(image_folder, tmp_path):
    r = cli("-q", "finetune", str(image_folder), "--backbone", "tiny_cnn", "--precision", "fp16",
            "--out", str(tmp_path / "m"))
    one_line_error(r, "precision must be auto, fp32 or bf16")
    r = cli("-q", "search", str(image_folder), "--fusion", "concat")
    assert r.returncode == 2 and "No such option: --fusion" in r.stderr


def test_extract_fills_the_cache_that_fit_then_reads(image_folder, tmp_path):
    """`transfuse extract` computes the features only; a fit with the same backbone and layers runs no
    network; what has nothing to extract is refused in one line."""
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    r = cli("extract", str(image_folder), "--backbone", "tiny_cnn", "--layers", "blocks.1,features", "--json", env=env)
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["items"] == 24 and done["unreadable"] == 0 and done["layers"] == ["blocks.1", "features"]
    r = cli("fit", str(image_folder), "--backbone", "tiny_cnn", "--layers", "blocks.1,features", "--out",
            str(tmp_path / "m"), env=env)
    assert r.returncode == 0 and "24 items, 0 extracted" in r.stderr, r.stderr
    r = cli("extract", str(image_folder), "--backbone", "tiny_cnn", env=env)
    assert r.returncode == 0 and "features of 24 items are in the cache" in " ".join(r.stdout.split())
    one_line_error(cli("extract", str(image_folder), "--backbone", "auto", env=env), "--backbone auto")
    one_line_error(cli("extract", str(image_folder), "--backbone", "tiny_cnn", "--no-cache", env=env), "--no-cache")
