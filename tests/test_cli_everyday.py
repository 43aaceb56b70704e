"""What a user notices on every run: logs without bar frames, -q that silences the libraries too,
--json that says where the model went, tables that fit 80 columns."""

import json
import shutil
import subprocess
import sys

from transfuse.progress import LogProgress

from conftest import cli


def test_fit_in_a_log_file_has_lines_not_bar_frames_and_json_says_where_the_model_went(image_folder, tmp_path):
    r = cli("fit", str(image_folder), "--backbone", "tiny_cnn", "--json", cwd=tmp_path)  # stderr is a pipe
    assert r.returncode == 0, r.stderr
    where = json.loads(r.stdout)["model_dir"]
    assert (tmp_path / where / "config.json").is_file()
    assert f"no --out given: the model is in {where}" in r.stderr
    assert "\r" not in r.stderr and "%|" not in r.stderr  # no tqdm frames


def test_log_progress_writes_a_line_at_most_every_few_seconds(caplog):
    caplog.set_level("INFO", logger="transfuse.progress")
    with LogProgress(100, "extract x", "img", every=3600) as bar:
        for _ in range(100):
            bar.update()
    assert caplog.records == []  # quick work: its caller's summary line is enough
    with LogProgress(10, "extract x", "img", every=0) as bar:
        bar.update(4)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["extract x: 4/10 img", "extract x: 4/10 img"]


def _warn(quiet: bool) -> subprocess.CompletedProcess:
    code = ("import warnings; from transfuse.cli.app import _main; "
            f"_main(verbose=0, quiet={quiet}, version=False); warnings.warn('constant feature'); print('done')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_warnings_are_one_log_line_and_q_silences_them():
    loud, quiet = _warn(False), _warn(True)
    assert loud.stdout.strip() == quiet.stdout.strip() == "done"
    lines = loud.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING: UserWarning: constant feature"), loud.stderr
    assert quiet.stderr.strip() == ""


def test_predict_table_fits_80_columns_and_keeps_file_names(image_folder, tmp_path):
    model = tmp_path / "m"
    assert cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--out", str(model)).returncode == 0
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "bag"
    shutil.copytree(image_folder / "bag", deep)
    r = cli("-q", "predict", str(model), str(deep), env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    assert all(p.name in r.stdout for p in deep.iterdir())  # shortened in the middle, file names whole
    for args in (["cache", "ls"], ["backbones"]):
        r = cli(*args, env={"COLUMNS": "80"})
        assert r.returncode == 0 and max(len(line) for line in r.stdout.splitlines()) <= 80, args
    assert "tiny_cnn" in cli("cache", "ls", env={"COLUMNS": "80"}).stdout
    assert "efficientnet_lite0 " in cli("backbones", env={"COLUMNS": "80"}).stdout  # names whole, not cut


def test_cls_pooling_on_a_cnn_is_a_one_line_error(image_folder):
    r = cli("-q", "fit", str(image_folder), "--backbone", "tiny_cnn", "--pooling", "cls")
    assert r.returncode == 2 and "class token" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
