"""Scale-out: extraction here against a local Ray cluster, and what the driver can take.

Measured on the same 2,000 Fashion-MNIST PNGs (EfficientNet-Lite0, eager fp32, empty cache each run):
- local extraction in this process (all cores; and one thread, which is what one actor runs);
- ``--cluster ray`` with 1 and 2 actors on a local cluster (``ray.init(num_cpus=2)``): wall time
  including actor start-up, and each worker's throughput while busy;
- Ray's scheduling cost per actor call: the same job with a UDF that does nothing, in items per call;
- the driver's own rates: hashing items (every item is listed and hashed there), committing pooled
  rows to the feature cache, writing them as Parquet.

From these the table projects the wall time for 10 million images on N workers: the job runs at
the slowest of N x the per-worker rate, the driver's ingestion rate and Ray's call rate, after the
driver has hashed every item.

Run: ``python benchmarks/scale_out.py [--n 2000]`` (2 cores: never beside other heavy work).
Writes benchmarks/results/scale_out.{md,json}.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
import time

import numpy as np

from transfuse.cache import FeatureCache
from transfuse.data.fingerprint import item_digest
from transfuse.engines import Plan
from transfuse.extract import Job, extract_features, on_cluster
from transfuse.extract.local import Flusher
from transfuse.extract.parquet import table

from common import WORK, fashion_pngs, markdown_table, save_results

PINNED = {"runtime": "torch", "precision": "fp32", "progress": False}
WIDTH = 1280  # EfficientNet-Lite0's pooled features
TARGET = 10_000_000
TMP = WORK / "scale-out"  # caches of the runs, removed at the end


class WorkerLines(logging.Handler):
    """Collects the per-worker lines run_on_ray logs: ``worker H:P: N items, R items/s while busy``."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[tuple[int, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"worker \S+: (\d+) items, ([\d.]+) items/s while busy", record.getMessage())
        if m:
            self.rates.append((int(m.group(1)), float(m.group(2))))


def local(paths: list[str], threads: int | None) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        start = time.perf_counter()
        extract_features(paths, cache=tempfile.mkdtemp(dir=TMP), **PINNED)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def on_ray(paths: list[str], workers: int, lines: WorkerLines) -> tuple[float, list[tuple[int, float]]]:
    lines.rates.clear()
    with on_cluster("ray", workers=workers):
        start = time.perf_counter()
        feats = extract_features(paths, cache=tempfile.mkdtemp(dir=TMP), **PINNED)
        seconds = time.perf_counter() - start
    assert feats.n_extracted == len(paths)
    return seconds, list(lines.rates)


class Nothing:
    """A Ray Data UDF that returns its batch: what is left is the cost of scheduling the call."""

    def __call__(self, batch):
        return batch


def call_cost(ray, n: int, per_call: int) -> float:
    """Seconds per actor call of an empty job over ``n`` rows in calls of ``per_call`` (2 actors, warm)."""
    import pyarrow as pa
    from ray.data import ActorPoolStrategy

    rows = pa.table({"item": [f"i{i}" for i in range(n)], "digest": [f"d{i}" for i in range(n)]})
    blocks = [rows.slice(i, per_call * 4) for i in range(0, n, per_call * 4)]

    def run() -> float:
        start = time.perf_counter()
        data = ray.data.from_arrow(blocks).map_batches(Nothing, batch_size=per_call, batch_format="pyarrow",
                                                        compute=ActorPoolStrategy(size=2), num_cpus=1)
        assert sum(len(b) for b in data.iter_batches(batch_size=None, batch_format="pyarrow")) == n
        return time.perf_counter() - start

    run()  # the first job pays for worker processes
    return min(run() for _ in range(2)) / (n / per_call)


def driver_rates(paths: list[str]) -> dict[str, float]:
    """Items per second the driver hashes, and pooled rows per second it commits to the cache or
    writes to Parquet (random rows of Lite0's width, in the shapes the actors send)."""
    import pyarrow.parquet as pq

    start = time.perf_counter()
    for p in paths:
        item_digest(p, "image")
    seconds = time.perf_counter() - start
    hashing, hash_mb = len(paths) / seconds, sum(os.path.getsize(p) for p in paths) / 1e6 / seconds
    n = 20_000
    rng = np.random.default_rng(0)
    fake = [f"{i:032x}" for i in range(n)]
    rows = rng.standard_normal((n, WIDTH)).astype(np.float32)
    root = tempfile.mkdtemp(dir=TMP)
    job = Job("efficientnet_lite0", "pretrained", "bench", ["features"], "avg", "bench", FeatureCache(root),
              engine=Plan("torch", "fp32"))
    job.needed = {"features": set(fake)}
    out = Flusher(job)
    start = time.perf_counter()
    for i in range(0, n, 64):  # as run_on_ray receives them: one table per actor call
        out.add(fake[i:i + 64], {"features": rows[i:i + 64]})
    out.flush()
    cache = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, n, 4096):
        pq.write_table(table(fake[i:i + 4096], fake[i:i + 4096], {"features": rows[i:i + 4096]}),
                       f"{root}/part-{i}.parquet")
    parquet = n / (time.perf_counter() - start)
    return {"hash": hashing, "hash_mb": hash_mb, "cache": cache, "parquet": parquet}


def projection(per_worker: float, call_seconds: float, per_call: int, rates: dict[str, float]) -> list[list]:
    """Wall time of TARGET items on n workers: each worker at its busy rate slowed by Ray's cost per
    call; the job at the slower of the workers together and (rows into the cache) the driver's
    ingestion; after the driver has hashed every item. Ray's scheduler has its own ceiling at
    hundreds of actors, which 2 cores cannot measure."""
    worker = per_call / (per_call / per_worker + call_seconds)
    rows = []
    for n in (1, 8, 64, 512, 1024, 4096):
        for mode, ingest in (("cache", rates["cache"]), ("parquet", None)):
            rate = n * worker if ingest is None else min(n * worker, ingest)
            bound = "workers" if rate == n * worker else "driver ingestion"
            hours = (TARGET / rates["hash"] + TARGET / rate) / 3600
            rows.append([n, mode, f"{rate:,.0f}", bound, f"{TARGET / rates['hash'] / 60:.1f}", f"{hours:.2f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    import ray

    TMP.mkdir(parents=True, exist_ok=True)
    paths, _, _ = fashion_pngs("train", args.n // 10, seed=3)
    lines = WorkerLines()
    logging.getLogger("transfuse.extract").addHandler(lines)
    logging.getLogger("transfuse.extract").setLevel(logging.INFO)

    here_all, here_one = local(paths, None), local(paths, 1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray_runs = {w: on_ray(paths, w, lines) for w in (1, 2)}
    per_call = 64
    cost = {k: call_cost(ray, 4096, k) for k in (8, per_call)}
    rates = driver_rates(paths)
    ray.shutdown()

    n = len(paths)
    per_worker = ray_runs[1][1][0][1]  # one actor alone: no other actor shares its cores
    rows = [["local, this process (2 threads)", f"{n / here_all:.1f}", "1.00", ""],
            ["local, 1 thread (what one actor runs)", f"{n / here_one:.1f}", f"{here_all / here_one:.2f}", ""]]
    for w, (sec, runs) in ray_runs.items():
        rows.append([f"Ray, {w} actor{'s' * (w > 1)} (wall, start-up included)", f"{n / sec:.1f}",
                     f"{here_all / sec:.2f}", ", ".join(f"{r:.1f}" for _, r in runs)])
    headline = markdown_table(["extraction of 2,000 PNGs, Lite0 eager fp32", "items/s", "x local", "per worker busy, items/s"],
                              rows)
    overhead = markdown_table(["Ray call (empty UDF, 2 warm actors)", "ms per call", "ms per item"],
                              [[f"{k} items per call", f"{v * 1e3:.1f}", f"{v * 1e3 / k:.2f}"] for k, v in cost.items()])
    driver = markdown_table(["driver", "per second"],
                            [["items hashed (read + SHA-256)", f"{rates['hash']:,.0f}"],
                             ["rows committed to the cache (1280 float32)", f"{rates['cache']:,.0f}"],
                             ["rows written to Parquet (1280 float32)", f"{rates['parquet']:,.0f}"]])
    project = markdown_table(["workers", "rows go to", "job items/s", "bound by", "hashing, min", "10M images, h"],
                             projection(per_worker, cost[per_call], per_call, rates))
    text = "\n\n".join([headline, overhead, driver,
                        f"Projection for {TARGET:,} images at {per_worker:.1f} items/s per worker (one actor alone, "
                        f"above) plus {cost[per_call] * 1e3:.1f} ms of Ray per {per_call}-item call; the driver "
                        f"hashes {rates['hash_mb']:.0f} MB/s of these small PNGs (larger files: read bandwidth "
                        f"decides):", project])
    save_results("scale_out", text, {"n": n, "local_s": here_all, "local_1thread_s": here_one,
                                      "ray": {w: {"seconds": s, "workers": r} for w, (s, r) in ray_runs.items()},
                                      "call_seconds": cost, "driver": rates, "per_worker": per_worker})
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
