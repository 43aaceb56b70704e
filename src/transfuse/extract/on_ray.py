"""Extraction on a Ray cluster: Ray Data maps batches of items over a pool of actors, each of which
builds the backbone once and runs :func:`~transfuse.extract.job.embed_batch`, the same per-batch
function as extraction in this process.

Items are listed and hashed on the driver, and only those missing from the cache are sent. Rows
come back to the driver, which commits them to the cache as local extraction does (same keys, same
shards, flushed every few hundred rows), so a killed job re-run computes only what is missing, and
a row Ray delivers twice (a task run again after a worker died) is stored once. With
``--features-out`` the rows never come back: the workers write them as Parquet part files.

Ray is imported only here, and this module only when a cluster is asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict

import numpy as np

from transfuse.backbones import get_spec
from transfuse.cluster import Cluster, connect, map_on_actors, pool, worker_error
from transfuse.engines import runner
from transfuse.errors import EngineError, OutOfTime
from transfuse.extract.context import CLUSTER
from transfuse.extract.job import Job, embed_batch, front_end
from transfuse.extract.local import UNITS, Flusher, check_deadline, show
from transfuse.extract.parquet import check_new, matrix, table, write_sidecar
from transfuse.progress import progress as show_progress

log = logging.getLogger("transfuse.extract")
ROWS_PER_CALL = 64  # items one actor call embeds: Ray's scheduling cost is paid once per call


class Embedder:
    """One actor: the backbone built once, then ``__call__`` per batch of items (a pyarrow table with
    ``item`` and ``digest``, and ``label`` when rows go to Parquet) -> a table of pooled rows of the
    items that could be decoded (the driver counts the rest as failed)."""

    def __init__(self, recipe: dict, batch_size: int | None, to_parquet: bool) -> None:
        self.job = Job(**recipe)
        engine = self.job.engine
        if engine.file and not os.path.isfile(engine.file):
            raise EngineError(f"the {engine.runtime} engine file calibrated on another node ({engine.file}) is not on "
                              f"{socket.gethostname()}; put TRANSFUSE_CACHE on storage every node shares, or pass "
                              f"--runtime torch")
        self.bb = front_end(self.job)
        self.runner = runner(self.job.engine, self.job.taps, self.bb.tap_names, self.job.device)
        self.batch_size = batch_size or self.bb.default_batch_size(self.job.device)
        self.to_parquet = to_parquet
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch):
        start = time.perf_counter()
        items, digests = batch.column("item").to_pylist(), batch.column("digest").to_pylist()
        pending: dict[str, list[np.ndarray]] = {tap: [] for tap in self.job.taps}
        done: list[str] = []
        keep: list[int] = []  # positions of the rows embedded (items with the same bytes each keep their own)
        for inputs, idx, ok in self.bb.batches(items, self.batch_size, 0, self.job.device):
            embed_batch(self.bb, self.job, inputs, [digests[int(i)] for i in idx], ok, pending, done, self.runner)
            keep.extend(int(i) for j, i in enumerate(idx) if bool(ok[j]))
        rows = {tap: np.concatenate(pending[tap]) if pending[tap] else np.zeros((0, 0), np.float32)
                for tap in self.job.taps}
        labels = batch.column("label").to_pylist() if "label" in batch.column_names else None
        extra = None if self.to_parquet else {"worker": [self.worker] * len(keep),
                                              "busy": [(time.perf_counter() - start) / max(len(keep), 1)] * len(keep)}
        return table([items[i] for i in keep], [digests[i] for i in keep], rows,
                     None if labels is None else [labels[i] for i in keep], extra)


def _mapped(ray, cluster: Cluster, job: Job, paths: list[str], digests: list[str], labels: list[str] | None,
            batch_size: int | None, to_parquet: bool):
    """The Ray dataset of pooled rows: items in blocks, mapped over the actor pool."""
    import pyarrow as pa

    if get_spec(job.backbone).modality != "text":  # workers may not share this process's working directory
        paths = [os.path.abspath(p) for p in paths]
    rows = pa.table({"item": paths, "digest": digests} | ({"label": labels} if labels is not None else {}))
    return map_on_actors(ray, cluster, rows, Embedder, {"recipe": job.recipe(), "batch_size": batch_size,
                                                        "to_parquet": to_parquet},
                         job.device, max(ROWS_PER_CALL, batch_size or 1), "extracting")


def _worker_error(exc: BaseException, cluster: Cluster) -> Exception:
    return worker_error(exc, cluster, "extraction")


def run_on_ray(job: Job, paths: list[str], digests: list[str], batch_size: int | None,
               progress: bool | None) -> set[str]:
    """Extract ``paths`` on the cluster that :func:`~transfuse.extract.context.on_cluster` named,
    committing rows to the job's cache as they arrive; return the digests that could not be decoded."""
    cluster = CLUSTER.get()
    ray = connect(cluster)
    out = Flusher(job)
    received: set[str] = set()
    workers: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    unit = UNITS.get(get_spec(job.backbone).modality, "img")
    start = time.perf_counter()
    with show_progress(len(paths), f"extract {job.backbone} on Ray", unit, show(progress)) as bar:
        try:
            mapped = _mapped(ray, cluster, job, paths, digests, None, batch_size, False)
            for part in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
                got = part.column("digest").to_pylist()
                if got:
                    out.add(got, {tap: matrix(part.column(tap)) for tap in job.taps})
                    for w, busy in zip(part.column("worker").to_pylist(), part.column("busy").to_pylist()):
                        workers[w][0] += 1
                        workers[w][1] += busy
                received.update(got)
                bar.update(len(got))
                check_deadline(job, len(received), len(paths))
        except (KeyboardInterrupt, OutOfTime):
            out.flush()
            raise
        except Exception as exc:
            out.flush()  # rows that arrived are kept: a re-run extracts only the rest
            raise _worker_error(exc, cluster) from None
        out.flush()
    job.forward_seconds = time.perf_counter() - start
    for w, (n, busy) in sorted(workers.items()):
        log.info("worker %s: %d items, %.1f items/s while busy", w, n, n / busy if busy else float("nan"))
    return set(digests) - received


def write_on_ray(job: Job, paths: list[str], digests: list[str], labels: list[str] | None, out: str,
                 batch_size: int | None) -> tuple[set[str], dict]:
    """Extract ``paths`` on the cluster and let the workers write the rows as Parquet part files
    under ``out`` (nothing comes back to the driver but the digests written); return the failed
    digests and the data set's sidecar."""
    import pyarrow.dataset as pads

    cluster = CLUSTER.get()
    ray = connect(cluster)
    path = check_new(out)
    try:
        _mapped(ray, cluster, job, paths, digests, labels, batch_size, True).write_parquet(str(path.resolve()))
    except Exception as exc:
        raise _worker_error(exc, cluster) from None
    written = pads.dataset(path, format="parquet").to_table(columns=["digest"]).column("digest").to_pylist()
    return set(digests) - set(written), write_sidecar(path, job)



def _calibrate(calibration: dict, weights: str, long_text: str, candidates, retry: bool):
    """Run on a worker: measure ``candidates`` there, remembered in that node's engine store."""
    from transfuse.config import SETTINGS
    from transfuse.engines import Calibration, EngineStore
    from transfuse.extract.job import ready_backbone

    args = calibration | {"store": EngineStore(SETTINGS.cache_dir)}  # this node's, as TRANSFUSE_CACHE says there
    measure = Calibration(**args, backbone=lambda: ready_backbone(args["name"], weights, args["weights_id"],
                                                                   args["device"], long_text))
    return measure(candidates, retry)


def measure_on_worker(calibration: dict, weights: str, long_text: str):
    """A ``measure`` for :func:`~transfuse.engines.planner.plan` that calibrates on a worker of the
    cluster (its hardware, not the driver's), once per node: the engine every actor then runs."""
    cluster = CLUSTER.get()
    calibration = {k: v for k, v in calibration.items() if k != "store"}

    def measure(candidates, retry: bool = False):
        ray = connect(cluster)
        _, resources = pool(ray, cluster, calibration["device"])
        task = ray.remote(_calibrate).options(**resources)
        try:
            return ray.get(task.remote(calibration, weights, long_text, candidates, retry))
        except Exception as exc:
            raise _worker_error(exc, cluster) from None

    return measure
