"""Features as a Parquet data set: one row per item (``item``, ``digest``, ``label``, one
fixed-size list column per tap), part files written by whoever computed them, and a sidecar
``_transfuse.json`` saying what the columns are (backbone, weights, preprocessing, pooling, engine,
and each tap's cache key). Readers skip files starting with ``_``, so the folder reads as plain
Parquet anywhere (pandas, Spark, DuckDB, Ray Data).

``transfuse extract --features-out DIR`` writes it; ``--features-in DIR`` (fit, search, rank,
predict) reads rows from it instead of extracting them when the keys match.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from transfuse.atomic import atomic_writer
from transfuse.errors import DataError
from transfuse.extract.job import Job

log = logging.getLogger("transfuse.extract")
SIDECAR = "_transfuse.json"
LAYOUT = "transfuse-features-1"
RESERVED = ("item", "digest", "label")


def table(items: list[str], digests: list[str], rows: dict[str, np.ndarray], labels: list[str] | None = None,
          extra: dict[str, list] | None = None):
    """A pyarrow table of rows: the item, its digest, its label (when known), one fixed-size list
    (float32) column per tap, then any ``extra`` columns."""
    import pyarrow as pa

    columns = {"item": pa.array(items, pa.string()), "digest": pa.array(digests, pa.string())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.string())
    for tap, vecs in rows.items():
        vecs = np.ascontiguousarray(vecs, np.float32)
        columns[tap] = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), vecs.shape[1])
    return pa.table(columns | {k: pa.array(v) for k, v in (extra or {}).items()})


def matrix(column) -> np.ndarray:
    """A fixed-size list column (chunked or not) as a (rows, width) float32 array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32, copy=False)


def check_new(out: str | os.PathLike) -> Path:
    """``out`` as a folder to write into: refused when it already holds anything."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"--features-out {path} already exists and is not empty; name a new folder (or delete it)")
    return path


def write_sidecar(out: str | os.PathLike, job: Job) -> dict:
    """What the data set's columns are (read back from its part files), next to them; returns it."""
    import pyarrow.dataset as pads

    data = pads.dataset(out, format="parquet")
    widths = {tap: data.schema.field(tap).type.list_size for tap in job.taps if tap in data.schema.names}
    sidecar = {"layout": LAYOUT, "rows": data.count_rows(), "taps": job.taps, "widths": widths, "keys": job.keys,
               "engine": {"runtime": job.engine.runtime, "precision": job.engine.precision}, **job.describe()}
    with atomic_writer(Path(out) / SIDECAR) as fh:
        fh.write(json.dumps(sidecar, indent=1).encode())
    return sidecar


def write_local(out: str | os.PathLike, job: Job, items: list[str], digests: list[str],
                labels: list[str] | None, failed: set[str]) -> dict:
    """Write the job's rows of ``items`` (all in its cache or memory) as one part file; returns the sidecar."""
    import pyarrow.parquet as pq

    path = check_new(out)
    path.mkdir(parents=True, exist_ok=True)
    keep = [i for i, d in enumerate(digests) if d not in failed]
    kept_digests = [digests[i] for i in keep]
    rows = {tap: job.rows(tap, kept_digests) for tap in job.taps}
    part = table([items[i] for i in keep], kept_digests, rows, None if labels is None else [labels[i] for i in keep])
    pq.write_table(part, path / "part-0.parquet")
    return write_sidecar(path, job)


class FeatureSet:
    """A Parquet feature data set opened for reading: its sidecar, then rows by digest on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / SIDECAR).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"--features-in {self.path} is not a feature data set written by `transfuse extract "
                            f"--features-out` ({SIDECAR}: {getattr(exc, 'strerror', None) or exc})") from None
        if self.meta.get("layout") != LAYOUT:
            raise DataError(f"--features-in {self.path} has layout {self.meta.get('layout')!r}; this transfuse reads "
                            f"{LAYOUT!r}")

    def matches(self, job: Job) -> list[str]:
        """The job's taps whose rows this data set holds (same key: backbone, weights, preprocessing,
        pooling, engine)."""
        return [tap for tap in job.taps if self.meta["keys"].get(tap) == job.keys[tap]]

    def mismatch(self, job: Job) -> str:
        """Why none of the job's taps match, in words."""
        have = self.meta
        for field, want in (("backbone", job.backbone), ("weights", job.weights_id), ("pooling", job.pooling)):
            if have.get(field) != want:
                return f"it holds {field} {have.get(field)!r}, this run asks for {want!r}"
        if not set(job.taps) & set(have["taps"]):
            return f"it holds layers {','.join(have['taps'])}, this run asks for {','.join(job.taps)}"
        engine = have.get("engine", {})
        return (f"its features were computed with {engine.get('runtime')} {engine.get('precision')}, this run uses "
                f"{job.engine.runtime} {job.engine.precision} (pass --runtime/--precision to match)")

    def load(self, job: Job, digests: list[str]) -> int:
        """Put the rows of ``digests`` this data set holds into the job's memory (not needed any more);
        returns how many items were found for every matching tap."""
        import pyarrow.dataset as pads

        taps = self.matches(job)
        if not taps:
            return 0
        try:
            data = pads.dataset(self.path, format="parquet").to_table(columns=["digest", *taps])
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read --features-in {self.path}: {exc}") from None
        where = {d: i for i, d in enumerate(data.column("digest").to_pylist())}
        found = [d for d in dict.fromkeys(digests) if d in where]
        rows = [where[d] for d in found]
        for tap in taps:
            vecs = matrix(data.column(tap))[rows]
            job.memory[tap].update(zip(found, vecs))
            job.needed[tap].difference_update(found)
        return len(found)
