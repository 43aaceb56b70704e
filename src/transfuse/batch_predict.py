"""Predictions for a large data set on a Ray cluster, streamed to Parquet.

``transfuse predict MODEL DATA --cluster ray --out preds.parquet``: the model directory travels to
the workers through Ray's object store (no shared disk needed), each actor loads it once and
predicts batches of items with :func:`~transfuse.workflow.predict_arrays`, as ``predict`` does here,
and the workers write the rows (``item``, ``label``, ``error``, one ``p:<class>`` column per class)
as Parquet part files. Nothing comes back to the driver but the count.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from transfuse.cluster import Cluster, connect, map_on_actors, worker_error

log = logging.getLogger(__name__)
ROWS_PER_CALL = 64
_NOT_SHIPPED = {"report.html", "report_files", "predictions.csv", "map.csv", "logs", "checkpoints"}


def model_files(model_dir: str | os.PathLike) -> dict[str, bytes]:
    """What loading the model needs, as ``{relative path: bytes}`` (reports and logs stay behind)."""
    root = Path(model_dir)
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in _NOT_SHIPPED:
            files[str(rel)] = path.read_bytes()
    return files


class Predictor:
    """One actor: the model written from ``files`` into a temporary folder and loaded once; each call
    predicts a batch of items (a pyarrow table with ``item``)."""

    def __init__(self, files: dict[str, bytes], settings: dict) -> None:
        from transfuse.pipeline import load_model, model_classes

        self._dir = tempfile.TemporaryDirectory(prefix="transfuse-model-")
        for rel, data in files.items():
            path = Path(self._dir.name) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.model = load_model(self._dir.name, **settings)
        self.classes = [str(c) for c in model_classes(self.model)]
        final = self.model.steps[-1][1] if hasattr(self.model, "steps") else self.model
        self.has_proba = hasattr(final, "predict_proba") and getattr(final, "has_proba", True)

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        from transfuse.errors import CorruptInputError
        from transfuse.workflow import predict_arrays

        items = batch.column("item").to_pylist()
        try:
            ok, labels, proba = predict_arrays(self.model, items, on_error="skip")
        except CorruptInputError:  # none of this call's items could be read: every row says so
            ok, labels, proba = np.zeros(len(items), bool), [], None
        rows = np.flatnonzero(ok)
        label = [None] * len(items)
        for j, i in enumerate(rows):
            label[i] = str(labels[j])
        columns = {"item": pa.array(items, pa.string()), "label": pa.array(label, pa.string()),
                   "error": pa.array([None if good else "unreadable" for good in ok], pa.string())}
        if self.has_proba:  # the same columns in every part file
            full = np.full((len(items), len(self.classes)), np.nan, np.float32)
            if proba is not None:
                full[rows] = proba
            for k, c in enumerate(self.classes):
                columns[f"p:{c}"] = pa.array(full[:, k], pa.float32(), mask=~ok.astype(bool))
        return pa.table(columns)


def predict_on_ray(cluster: Cluster, model_dir: str | os.PathLike, items: list[str], out: str | os.PathLike,
                   settings: dict | None = None, batch_size: int = ROWS_PER_CALL) -> dict:
    """Predict ``items`` with the model in ``model_dir`` on ``cluster``, the workers writing Parquet
    part files into the new folder ``out``; returns items, rows written and unreadable items."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from transfuse.errors import DataError
    from transfuse.extract.parquet import check_new

    out = check_new(out, "--out")
    if not items:
        raise DataError("no items to predict")
    ray = connect(cluster)  # before anything else imports ray (see transfuse.cluster)
    files = model_files(model_dir)
    log.info("model %s: %.1f MB shipped to the actors", model_dir, sum(map(len, files.values())) / 1e6)
    rows = pa.table({"item": pa.array(items, pa.string())})
    try:
        map_on_actors(ray, cluster, rows, Predictor, {"files": files, "settings": settings or {}},
                      (settings or {}).get("device"), batch_size, "predicting").write_parquet(str(out.resolve()))
    except Exception as exc:
        raise worker_error(exc, cluster, "prediction") from None
    errors = pads.dataset(out, format="parquet").to_table(columns=["error"]).column("error")
    return {"items": len(items), "rows": len(errors), "unreadable": len(errors) - errors.null_count}
