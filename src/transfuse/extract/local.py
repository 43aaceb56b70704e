"""Extraction in this process: batches decoded here, embedded here, flushed to the cache as they come."""

from __future__ import annotations

import logging
import time

import numpy as np

from transfuse.engines import runner
from transfuse.errors import OutOfTime
from transfuse.extract.context import DEADLINE
from transfuse.extract.job import Job, embed_batch, front_end
from transfuse.progress import progress as show_progress

log = logging.getLogger("transfuse.extract")
UNITS = {"text": "text", "audio": "clip", "sequence": "seq"}  # of the progress bar (images: img)
FLUSH_ROWS = 256  # pooled rows buffered per tap before one shard is written to the cache


def show(progress: bool | None) -> bool:
    return log.getEffectiveLevel() <= logging.INFO if progress is None else progress


class Flusher:
    """Pooled rows buffered per tap and written to the job (its cache) every :data:`FLUSH_ROWS`."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.pending: dict[str, list[np.ndarray]] = {tap: [] for tap in job.taps}
        self.digests: list[str] = []

    def add(self, digests: list[str], rows: dict[str, np.ndarray]) -> None:
        for tap in self.job.taps:
            self.pending[tap].append(rows[tap])
        self.digests.extend(digests)
        self.maybe()

    def maybe(self) -> None:
        if len(self.digests) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        for tap in self.job.taps:
            if self.pending[tap]:
                self.job.save(tap, self.digests, np.concatenate(self.pending[tap]))
                self.pending[tap].clear()
        self.digests.clear()


def check_deadline(job: Job, done: int, total: int) -> None:
    stop_at = DEADLINE.get()
    if stop_at is not None and time.monotonic() > stop_at:
        raise OutOfTime(f"{job.backbone}: the deadline came after {done} of {total} new items "
                        f"(kept in the feature cache when one is used)")


def run_local(job: Job, paths: list[str], digests: list[str], batch_size: int | None,
              num_workers: int | None, progress: bool | None) -> set[str]:
    """Extract ``paths`` batch by batch, flushing to the cache every FLUSH_ROWS; return failed digests."""
    bb = front_end(job)
    engine_runner = runner(job.engine, job.taps, bb.tap_names, job.device)
    batches = bb.batches(paths, batch_size or bb.default_batch_size(job.device), num_workers, job.device)
    failed: set[str] = set()
    out = Flusher(job)
    bar = show_progress(len(paths), f"extract {job.backbone}", UNITS.get(bb.modality, "img"), show(progress))
    start = time.perf_counter()
    with bar:
        done = 0
        try:
            for inputs, idx, ok in batches:
                failed.update(embed_batch(bb, job, inputs, [digests[int(i)] for i in idx], ok,
                                          out.pending, out.digests, engine_runner))
                out.maybe()
                bar.update(len(idx))
                done += len(idx)
                check_deadline(job, done, len(paths))
        except (KeyboardInterrupt, OutOfTime):
            out.flush()  # keep what was computed: the next run resumes after it
            raise
        out.flush()
    job.forward_seconds = time.perf_counter() - start
    return failed
