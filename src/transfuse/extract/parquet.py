"""Features as a Parquet data set: one row per item (``item``, ``digest``, ``label``, one
list column per tap), part files written by whoever computed them, and a sidecar
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


def table(items: list[str], digests: list[str], rows: dict[str, np.ndarray], labels: list[str] | None = None,
          extra: dict[str, list] | None = None):
    """A pyarrow table of rows: the item, its digest, its label (when known), one list (float32)
    column per tap, then any ``extra`` columns. Variable-size lists, so a batch with no rows has the
    same column types as any other."""
    import pyarrow as pa

    columns = {"item": pa.array(items, pa.string()), "digest": pa.array(digests, pa.string())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.string())
    for tap, vecs in rows.items():
        vecs = np.ascontiguousarray(vecs, np.float32)
        vecs = vecs if vecs.ndim == 2 else vecs.reshape(len(items), -1)
        offsets = np.arange(len(items) + 1, dtype=np.int32) * vecs.shape[1]
        columns[tap] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vecs.reshape(-1), pa.float32()))
    return pa.table(columns | {k: pa.array(v) for k, v in (extra or {}).items()})


def matrix(column) -> np.ndarray:
    """A list column of equal-length rows (chunked or not) as a (rows, width) float32 array."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    rows = len(column)
    return values.reshape(rows, len(values) // rows if rows else 0)


def check_new(out: str | os.PathLike, flag: str = "--features-out") -> Path:
    """``out`` as a folder for Parquet part files: refused when it already holds anything."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"{flag} {path} already exists and is not empty; name a new folder (or delete it)")
    return path


def write_sidecar(out: str | os.PathLike, job: Job) -> dict:
    """What the data set's columns are (read back from its part files), next to them; returns it."""
    import pyarrow.dataset as pads

    data = pads.dataset(out, format="parquet")
    first = data.head(1, columns=[tap for tap in job.taps if tap in data.schema.names])
    widths = {tap: len(first.column(tap)[0]) if first.num_rows else 0 for tap in first.column_names}
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
        if have.get("meta", {}).get("preprocess") != job.preprocess:
            return (f"its items were preprocessed as {have.get('meta', {}).get('preprocess')!r}, this run uses "
                    f"{job.preprocess!r}")
        engine = have.get("engine", {})
        if (engine.get("runtime"), engine.get("precision")) != (job.engine.runtime, job.engine.precision):
            return (f"its features were computed with {engine.get('runtime')} {engine.get('precision')}, this run "
                    f"uses {job.engine.runtime} {job.engine.precision} (pass --runtime/--precision to match)")
        return "its cache keys differ from this run's (another device, or another transfuse feature format)"

    def same_source(self, backbone: str, weights_id: str, pooling: str) -> bool:
        """Whether it holds features of this backbone, weights and pooling (its engine is then worth taking)."""
        return (self.meta.get("backbone"), self.meta.get("weights"), self.meta.get("pooling")) == \
            (backbone, weights_id, pooling)

    def load(self, job: Job, digests: list[str]) -> int:
        """Put the rows of ``digests`` this data set holds into the job's memory (not needed any more);
        returns how many items were found for every matching tap."""
        import pyarrow.dataset as pads

        taps = self.matches(job)
        if not taps:
            return 0
        wanted = list(dict.fromkeys(digests))
        try:
            data = pads.dataset(self.path, format="parquet").to_table(
                columns=["digest", *taps], filter=pads.field("digest").isin(wanted))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read --features-in {self.path}: {exc}") from None
        where = {d: i for i, d in enumerate(data.column("digest").to_pylist())}
        found = [d for d in wanted if d in where]
        rows = [where[d] for d in found]
        for tap in taps:
            vecs = matrix(data.column(tap))[rows]
            job.memory[tap].update(zip(found, vecs))
            job.needed[tap].difference_update(found)
        return len(found)
