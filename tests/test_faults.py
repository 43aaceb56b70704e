"""The fault sweep, kept as tests: bad inputs, kills, concurrent runs and damaged files, tried the way
a user meets them (real console commands in subprocesses, real files, real kill -9). Each case says
what must happen: nothing lost, nothing wrong, one clear line and exit code 2 for bad input.
docs/faults.md lists the cases with these test names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, cli, fashion_available

TINY = ["--backbone", "tiny_cnn"]
FINETUNE = ["finetune", *TINY, "--image-size", "32", "--batch-size", "8", "--patience", "10"]


def one_line_error(run, *needles: str) -> None:
    """Exit code 2, one line on stderr that starts with 'error:' and says what to do."""
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith(("WARNING", "INFO"))]
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def folder(tmp_path: Path, classes=("bag", "sandal", "trouser"), per_class: int = 8, name: str = "data") -> Path:
    root = tmp_path / name
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for src in sorted((EXAMPLES / cls).glob("*.png"))[:per_class]:
            shutil.copy(src, root / cls / src.name)
    return root


@pytest.fixture
def env(tmp_path) -> dict:
    return {"TRANSFUSE_CACHE": str(tmp_path / "cache")}


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, dict]:
    """A data folder whose tiny_cnn features are in a cache (shared by the cases that must not touch it)."""
    root = tmp_path_factory.mktemp("cached")
    env = {"TRANSFUSE_CACHE": str(root / "cache")}
    data = folder(root)
    assert cli("-q", "fit", str(data), *TINY, "--out", str(root / "m"), env=env).returncode == 0
    return data, env


# -- nothing lost ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fit_out_never_replaces_what_is_not_a_model(tmp_path, env):
    data = folder(tmp_path)
    mine = tmp_path / "mine"
    (mine / "photos").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    one_line_error(cli("-q", "fit", str(data), *TINY, "--out", str(mine), env=env), "--force", "notes.txt")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "photos").is_dir()
    afile = tmp_path / "afile"
    afile.write_text("keep me too")
    one_line_error(cli("-q", "fit", str(data), *TINY, "--out", str(afile), env=env), "is a file")
    assert afile.read_text() == "keep me too"
    work = tmp_path / "work"
    work.mkdir()
    one_line_error(cli("-q", "fit", str(data), *TINY, "--out", ".", cwd=work, env=env), "current folder")
    assert not list(work.iterdir()) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    model = tmp_path / "model"
    assert cli("-q", "fit", str(data), *TINY, "--out", str(model), env=env).returncode == 0
    (model / "stale.txt").write_text("from the model before")
    assert cli("-q", "fit", str(data), *TINY, "--head", "ridge", "--out", str(model), env=env).returncode == 0
    assert not (model / "stale.txt").exists()  # a model is replaced whole
    assert cli("-q", "fit", str(data), *TINY, "--out", str(mine), "--force", env=env).returncode == 0
    assert not (mine / "notes.txt").exists() and (mine / "config.json").is_file()


def test_out_in_a_place_that_cannot_be_written(tmp_path, env):
    data = folder(tmp_path)
    (tmp_path / "plain").write_text("a file, not a folder")
    one_line_error(cli("-q", "fit", str(data), *TINY, "--out", str(tmp_path / "plain" / "m"), env=env),
                   "not writable")


@pytest.mark.slow
def test_out_edge_cases(tmp_path, env):
    """A folder with a logs/ of your own is not a fine-tuning run; a symbolic link is followed; the
    data folder itself, or a folder inside it, is never an output (the next run would read it)."""
    data = folder(tmp_path)
    mine = tmp_path / "mine"
    (mine / "logs").mkdir(parents=True)
    (mine / "logs" / "notes.txt").write_text("keep me")
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "1", "--out", str(mine),
                       env=env), "--force")
    assert (mine / "logs" / "notes.txt").read_text() == "keep me"
    target = tmp_path / "target"
    assert cli("-q", "fit", str(data), *TINY, "--out", str(target), env=env).returncode == 0
    (tmp_path / "link").symlink_to(target)
    assert cli("-q", "fit", str(data), *TINY, "--head", "ridge", "--out", str(tmp_path / "link"), env=env).returncode == 0
    assert (tmp_path / "link").is_symlink() and json.loads((target / "config.json").read_text())["parts"][-1]["kind"] == \
        "ridge"
    for inside in (data / "bag" / "model", data):
        one_line_error(cli("-q", "fit", str(data), *TINY, "--out", str(inside), "--force", env=env),
                       "inside the data folder")
    one_line_error(cli("-q", "fit", ".", *TINY, cwd=data, env=env), "inside the data folder")


@pytest.mark.slow
def test_compare_checks_every_run_first_and_can_be_run_again(tmp_path, env):
    data = folder(tmp_path)
    started = time.perf_counter()
    one_line_error(cli("-q", "compare", str(data), *TINY, "--epochs", "3", "--out", str(tmp_path / "c"), env=env),
                   "--probe-epochs")
    assert not (tmp_path / "c").exists() and time.perf_counter() - started < 60  # before the probe trained
    (tmp_path / "c" / "probe").mkdir(parents=True)  # what a killed comparison leaves: its marker, a first run
    (tmp_path / "c" / "compare.json").write_text("[]\n")
    run = cli("-q", "compare", str(data), *TINY, "--epochs", "1", "--strategies", "head", "--image-size", "32",
              "--out", str(tmp_path / "c"), "--json", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(json.loads((tmp_path / "c" / "compare.json").read_text())) == 3


def test_finetune_into_an_existing_model_is_atomic(tmp_path, env):
    data = folder(tmp_path)
    model = tmp_path / "m"
    assert cli("-q", "fit", str(data), *TINY, "--out", str(model), env=env).returncode == 0
    (model / "stale.txt").write_text("from the probe")
    run = cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "1", "--out", str(model), env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (model / "stale.txt").exists() and (model / "checkpoints" / "last.ckpt").is_file()
    assert [p["kind"] for p in json.loads((model / "config.json").read_text())["parts"]] == ["finetuned"]


def _weights(model: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(model / "model.safetensors"))


@pytest.mark.slow
def test_killed_finetune_resumes_to_exactly_the_uninterrupted_run(tmp_path, env):
    """kill -9 right after the first checkpoint, then --resume: the same weights, bit for bit, as a run
    never interrupted (data order, augmentation and dropout are drawn from seed and epoch)."""
    data = folder(tmp_path, per_class=30)
    args = [*FINETUNE, str(data), "--strategy", "full", "--epochs", "4"]
    assert cli("-q", *args, "--out", str(tmp_path / "whole"), env=env).returncode == 0
    killed = tmp_path / "killed"
    exe = Path(sys.executable).with_name("transfuse")
    proc = subprocess.Popen([str(exe), "-q", *args, "--out", str(killed)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "config.json").exists()  # no model yet, only the run's checkpoints
    resumed = cli("-q", *args, "--out", str(killed), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "will be deleted" not in resumed.stderr  # Lightning's warning about the log: its rows are kept
    whole, again = _weights(tmp_path / "whole"), _weights(killed)
    assert whole.keys() == again.keys() and all(np.array_equal(whole[k], again[k]) for k in whole)
    log_whole, log_again = (_log(m) for m in (tmp_path / "whole", killed))
    assert log_again[0] == log_whole[0]  # epoch 0, logged before the kill, is kept as it was
    assert set(log_again) == set(log_whole)


def _log(model: Path) -> dict[float, dict]:
    """The CSV log's rows by epoch (train and validation rows merged)."""
    import csv

    rows: dict[float, dict] = {}
    with open(model / "logs" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(float(row["epoch"]), {}).update({k: float(v) for k, v in row.items() if v})
    return rows


def test_resume_with_other_data_or_settings_is_refused(tmp_path, env):
    data = folder(tmp_path)
    model = tmp_path / "m"
    run = cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "1", "--out", str(model), env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "last:1", "--epochs", "2", "--out", str(model),
                       "--resume", env=env), "cannot be resumed", "strategy")
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "2", "--image-size", "48",
                       "--out", str(model), "--resume", env=env), "cannot be resumed", "image_size")
    shutil.rmtree(data / "trouser")
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "2", "--out", str(model),
                       "--resume", env=env), "cannot be resumed", "classes")
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "2", "--out",
                       str(tmp_path / "never-started"), "--resume", env=env), "nothing to resume")


def test_class_list_must_fit_the_head(tmp_path, env):
    data = folder(tmp_path)
    model = tmp_path / "m"
    assert cli("-q", "fit", str(data), *TINY, "--out", str(model), env=env).returncode == 0
    config = json.loads((model / "config.json").read_text())
    for classes in (["bag", "sandal"], ["bag", "sandal", "trouser", "extra"]):
        config["parts"][-1]["meta"]["classes"] = classes
        (model / "config.json").write_text(json.dumps(config))
        one_line_error(cli("-q", "predict", str(model), str(data / "bag"), env=env), "classes are listed")


def test_duplicates_never_sit_in_both_splits(tmp_path, env, caplog):
    from transfuse.data import load_image_folder, load_manifest
    from transfuse.data.split import split_source

    data = folder(tmp_path)
    shutil.copy(data / "bag" / sorted(os.listdir(data / "bag"))[0], data / "bag" / "copy.png")
    train, test = split_source(load_image_folder(data))
    assert len(train) + len(test) == 24 and "left out 1 duplicate" in caplog.text
    rows = ["path,label"] + [f"{p},bag" for p in sorted((data / "bag").glob("*.png"))] + \
           [f"{data / 'bag' / 'copy.png'},sandal", f"{next((data / 'sandal').glob('*.png'))},sandal"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(Exception, match="same content as an item of another class"):
        split_source(load_manifest(tmp_path / "m.csv"))
    one_line_error(cli("-q", "fit", "--manifest", str(tmp_path / "m.csv"), *TINY, env=env), "another class")


def test_changed_cache_shards_are_detected_and_extracted_again(tmp_path, caplog):
    from transfuse.cache import FeatureCache
    from transfuse.extract import extract_features

    data = folder(tmp_path)
    paths = sorted(str(p) for p in data.rglob("*.png"))
    cache = tmp_path / "cache"
    first = extract_features(paths, backbone="tiny_cnn", cache=cache, progress=False)
    for shard in (cache / "shards").rglob("*.npy"):  # rows scaled and one made NaN, as a bad disk or a hand might
        rows = np.load(shard)
        rows[0] = np.nan
        np.save(shard, rows * 2)
    again = extract_features(paths, backbone="tiny_cnn", cache=cache, progress=False)
    assert again.n_extracted == len(paths) and "checksum mismatch" in caplog.text
    np.testing.assert_array_equal(again.X, first.X)
    assert FeatureCache(cache).verify(next(iter({e.key for e in FeatureCache(cache).entries()}))) == 0


def test_evaluate_says_when_the_data_includes_the_training_split(tmp_path, env):
    data = folder(tmp_path)
    model = tmp_path / "m"
    assert cli("-q", "fit", str(data), *TINY, "--out", str(model), env=env).returncode == 0
    run = cli("evaluate", str(model), str(data), "--json", env=env)
    metrics = json.loads(run.stdout)
    assert metrics["overlap"]["seen"] == 18 and metrics["overlap"]["unseen"]["n"] == 6
    assert "were used to train" in run.stderr
    fresh = folder(tmp_path, per_class=12, name="fresh")
    for cls in ("bag", "sandal", "trouser"):  # only the items the model never saw
        for p in sorted((fresh / cls).glob("*.png"))[:8]:
            p.unlink()
    assert "overlap" not in json.loads(cli("evaluate", str(model), str(fresh), "--json", env=env).stdout)


@pytest.mark.parametrize("args,needle", [
    (["finetune", "DATA", "--epochs", "-1"], "--epochs"),
    (["finetune", "DATA", "--epochs", "0"], "--epochs"),
    (["finetune", "DATA", "--image-size", "0"], "--image-size"),
    (["finetune", "DATA", "--batch-size", "0"], "--batch-size"),
    (["fit", "DATA", "--seed", "-1"], "--seed"),
    (["fit", "DATA", "--workers", "-1"], "--workers"),
    (["fit", "DATA", "--test-size", "1"], "--test-size"),
    (["fit", "DATA", "--auto", "--cv", "1"], "--cv"),
    (["finetune", "DATA", "--lr", "0"], "--lr"),
    (["finetune", "DATA", "--epochs", "3", "--strategy", "lp-ft"], "--probe-epochs"),
    (["cache", "prune", "--older-than", "-5"], "--older-than"),
])
def test_numbers_out_of_range_are_one_line_errors(cached, tmp_path, args, needle):
    data, env = cached
    cache = Path(env["TRANSFUSE_CACHE"])
    before = sorted(cache.rglob("*.npy"))
    one_line_error(cli("-q", *[str(data) if a == "DATA" else a for a in args], *TINY * (args[0] != "cache"),
                       env=env, cwd=tmp_path), needle)
    assert sorted(cache.rglob("*.npy")) == before  # nothing pruned, nothing written
    assert not list(tmp_path.iterdir())  # nothing trained or saved


# -- the exit-code and message contract ----------------------------------------------------------------

def test_decompression_bomb_is_refused_by_fit_and_finetune(tmp_path, env):
    data = folder(tmp_path)
    Image.new("L", (14000, 14000)).save(data / "bag" / "bomb.png")  # 196 Mpixels in a few hundred kB
    one_line_error(cli("-q", "fit", str(data), *TINY, env=env), "bomb.png", "--skip-bad")
    one_line_error(cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "1", env=env), "bomb.png")


def test_damaged_fine_tuned_model_is_a_clear_error(tmp_path, env):
    data = folder(tmp_path)
    model = tmp_path / "m"
    assert cli("-q", *FINETUNE, str(data), "--strategy", "full", "--epochs", "1", "--out", str(model),
               env=env).returncode == 0
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_line_error(cli("-q", "predict", str(model), str(data / "bag"), env=env), "fit again")


PAYLOAD = """
import os, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save(dict([({key!r}, Payload())]), {path!r})
"""


@pytest.mark.slow
def test_pickle_payloads_are_never_loaded(tmp_path, env):
    data = folder(tmp_path)
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth"
    subprocess.run([sys.executable, "-c", PAYLOAD.format(marker=marker, key="stem.0.weight", path=str(evil))],
                   check=True)
    one_line_error(cli("-q", "fit", str(data), *TINY, "--weights", str(evil), env=env), "does not load")
    from transfuse.backbones.text import _minilm_dir

    hf = tmp_path / "hf"  # a Hugging Face folder whose weights are a pickle with a payload
    hf.mkdir()
    for f in Path(_minilm_dir()).iterdir():
        if f.suffix in (".json", ".txt"):
            shutil.copy(f, hf / f.name)
    subprocess.run([sys.executable, "-c", PAYLOAD.format(marker=marker, key="embeddings.word_embeddings.weight",
                                                         path=str(hf / "pytorch_model.bin"))], check=True)
    texts = tmp_path / "t.csv"
    texts.write_text("text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(8)))
    one_line_error(cli("-q", "fit", str(texts), "--backbone", f"hf:{hf}", env=env), "does not load")
    assert not marker.exists()


def test_long_csv_fields_and_symlink_loops(tmp_path, env):
    from transfuse.data import load_source

    long = tmp_path / "long.csv"
    long.write_text("text,label\n" + "".join(f"\"{'word ' * 40_000}{i}\",{'ab'[i % 2]}\n" for i in range(4)))
    assert len(load_source(long).items[0]) > 128 * 1024  # over the csv module's default field limit
    data = folder(tmp_path)
    (data / "bag" / "loop.png").symlink_to(data / "bag" / "loop.png")
    one_line_error(cli("-q", "fit", str(data), *TINY, env=env), "symbolic link")


# -- sharing ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_models_and_caches_follow_the_umask(tmp_path):
    data = folder(tmp_path)
    exe = Path(sys.executable).with_name("transfuse")
    env = {**os.environ, "TRANSFUSE_CACHE": str(tmp_path / "cache")}
    for command in (f"fit '{data}' --out '{tmp_path / 'm'}'",
                    f"finetune '{data}' --strategy full --epochs 1 --image-size 32 --out '{tmp_path / 'f'}'"):
        run = subprocess.run(["sh", "-c", f"umask 002 && '{exe}' -q {command} --backbone tiny_cnn"], env=env,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    files = [tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json", tmp_path / "cache" / "catalogue.sqlite",
             *(tmp_path / "cache" / "shards").rglob("*.npy"), *(tmp_path / "f" / "checkpoints").glob("*.ckpt")]
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o775
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o664} == {}


def test_read_only_places_are_recognised(tmp_path, monkeypatch):
    """Root passes every permission check, so the check itself is exercised: a cache whose folder
    cannot be written opens read-only; a model cannot go where nothing can be written."""
    from transfuse.cache import FeatureCache
    from transfuse.errors import ModelDirError
    from transfuse.extract import extract_features
    from transfuse.modeldir import check_destination

    data = folder(tmp_path)
    extract_features(sorted(str(p) for p in data.rglob("*.png"))[:4], backbone="tiny_cnn", cache=tmp_path / "cache",
                     progress=False)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert FeatureCache(tmp_path / "cache").read_only
    with pytest.raises(ModelDirError, match="not writable"):
        check_destination(tmp_path / "new" / "model")


def test_a_read_only_cache_serves_what_it_holds(tmp_path):
    from transfuse.cache import FeatureCache
    from transfuse.extract import extract_features

    data = folder(tmp_path)
    paths = sorted(str(p) for p in data.rglob("*.png"))
    full = extract_features(paths[:20], backbone="tiny_cnn", cache=tmp_path / "cache", progress=False)
    shards = sorted((tmp_path / "cache").rglob("*"))
    ro = FeatureCache(tmp_path / "cache", read_only=True)
    served = extract_features(paths[:20], backbone="tiny_cnn", cache=ro, progress=False)
    assert served.n_extracted == 0 and np.array_equal(served.X, full.X)
    more = extract_features(paths, backbone="tiny_cnn", cache=ro, progress=False)  # new ones: kept in memory
    assert more.n_extracted == 4 and np.array_equal(more.X[:20], full.X)
    assert sorted((tmp_path / "cache").rglob("*")) == shards  # nothing written
    shard = next((tmp_path / "cache" / "shards").rglob("*.npy"))
    np.save(shard, np.load(shard) * 2)  # damaged, and it cannot be dropped from a read-only catalogue
    fixed = extract_features(paths[:20], backbone="tiny_cnn", cache=FeatureCache(tmp_path / "cache", read_only=True),
                             progress=False)
    assert fixed.n_extracted == 20 and np.array_equal(fixed.X, full.X)


# -- what the sweep found sound, kept sound --------------------------------------------------------------

def _odd_images(root: Path) -> dict[str, bool]:
    """Files that look like images; True: a decoder must read them, False: they must be reported."""
    src = Image.open(next(EXAMPLES.glob("bag/*.png"))).convert("RGB")
    src.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.asarray(src.convert("L"), dtype=np.uint16) * 257).save(root / "sixteen.png")
    frames = [src, src.rotate(90)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:])
    src.resize((3000, 3000)).save(root / "large.png")
    good = next(EXAMPLES.glob("bag/*.png")).read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "renamed.png").write_text("a text file with an image's name")
    return {"cmyk.jpg": True, "sixteen.png": True, "animated.gif": True, "large.png": True,
            "truncated.png": False, "empty.png": False, "renamed.png": False}


def test_odd_image_files_are_read_or_reported(tmp_path, env):
    data = folder(tmp_path)
    expected = _odd_images(data / "bag")
    run = cli("-q", "fit", str(data), *TINY, "--out", str(tmp_path / "m"), env=env)
    bad = sorted(name for name, readable in expected.items() if not readable)
    one_line_error(run, f"{len(bad)} of {24 + len(expected)} files could not be read", "--skip-bad")
    assert all(name in run.stderr for name in bad[:3])
    run = cli("-q", "fit", str(data), *TINY, "--out", str(tmp_path / "m"), "--skip-bad", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["data"]["skipped"] == len(bad)


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_same_features(tmp_path):
    """kill -9 during extraction into the cache, then run again: only the rest is extracted, and the
    features are bitwise those of an uninterrupted extraction."""
    if not fashion_available():
        pytest.skip("needs dataset-fashion-mnist (make test installs it)")
    from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, write_pngs
    from transfuse.extract import extract_features

    images, labels = fashion_mnist("test")
    paths = write_pngs(images[:900], labels[:900], tmp_path / "png", FASHION_CLASSES)
    listing = tmp_path / "paths.json"
    listing.write_text(json.dumps(paths))
    child = ("import json, sys; from transfuse.extract import extract_features; "
             "extract_features(json.load(open(sys.argv[1])), cache=sys.argv[2], runtime='torch', precision='fp32', "
             "progress=False)")
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", child, str(listing), str(cache)])
    deadline = time.time() + 300
    while not _committed_rows(cache) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the extraction ended before it could be killed"
    resumed = extract_features(paths, cache=cache, runtime="torch", precision="fp32", progress=False)
    assert 0 < resumed.n_extracted < len(paths)
    clean = extract_features(paths, cache=False, runtime="torch", precision="fp32", progress=False)
    np.testing.assert_array_equal(resumed.X, clean.X)


def _committed_rows(cache: Path) -> int:
    """Feature rows the catalogue holds (committed: their shard is on disk and named there)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{cache / 'catalogue.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_prune_during_a_fit_never_corrupts_the_cache(tmp_path, env):
    from transfuse.cache import FeatureCache

    data = folder(tmp_path, per_class=30)
    exe = Path(sys.executable).with_name("transfuse")
    with open(tmp_path / "fit.err", "w") as err:
        fit = subprocess.Popen([str(exe), "-q", "fit", str(data), "--out", str(tmp_path / "m")],
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
        pruned = 0
        while fit.poll() is None:
            pruned += cli("cache", "prune", "--all", env=env).returncode == 0
    stderr = (tmp_path / "fit.err").read_text()
    assert fit.returncode in (0, 2), stderr
    if fit.returncode == 2:  # the prune took features it was about to read: one line, run again
        assert len([line for line in stderr.splitlines() if line.startswith("error:")]) == 1, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr and pruned >= 1
    again = cli("-q", "fit", str(data), "--out", str(tmp_path / "m2"), env=env)
    assert again.returncode == 0, again.stderr
    store = FeatureCache(env["TRANSFUSE_CACHE"])
    assert store.entries() and all(store.verify(e.key) == 0 for e in store.entries())
