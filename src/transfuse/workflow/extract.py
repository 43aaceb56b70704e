"""``transfuse extract``: features computed into the cache (or a Parquet data set) and nothing
else; and the one place a job turns its data into a feature matrix."""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from transfuse.data.source import Source
from transfuse.errors import DataError
from transfuse.featurizers import backbone_list
from transfuse.workflow.requests import AUTO, FeaturizerSpec

log = logging.getLogger(__name__)


def extract_source(source: Source, spec: FeaturizerSpec, skip_bad: bool = False,
                   features_out: str | os.PathLike | None = None) -> dict:
    """``transfuse extract``: the features of every item of ``source`` computed into the cache and
    nothing else (no split, no training), so later fit, search, rank and auto runs with the same
    backbone, layers and pooling read them. With ``features_out`` they are written as a Parquet
    feature data set there instead (with the labels; see :func:`~transfuse.extract.write_features`).
    Returns what was done: items, unreadable ones, columns, engine per backbone, seconds."""
    if spec.cache is False and features_out is None:
        raise DataError("extract only fills the feature cache; drop --no-cache")
    if spec.backbone == AUTO:
        raise DataError("extract computes the features of the backbones you name; --backbone auto chooses one at fit "
                        "time (transfuse rank extracts every candidate's)")
    featurizer = spec.build(source.kind)
    if featurizer.fitted:
        raise DataError(f"{featurizer.kind} learns its features from the training split when it is fitted; there is "
                        f"nothing to extract ahead of fit")
    start = time.perf_counter()
    if features_out is not None:
        return _write_features(source, spec, featurizer, skip_bad, features_out) | {
            "seconds": round(time.perf_counter() - start, 2)}
    X, bad = features_of(featurizer, source, skip_bad)
    return {"items": len(source), "unreadable": len(bad), "columns": int(X.shape[1]),
            "layers": list(featurizer.slices_), "engines": dict(featurizer.engine_notes_),
            "seconds": round(time.perf_counter() - start, 2)}


def _write_features(source: Source, spec: FeaturizerSpec, featurizer, skip_bad: bool, out) -> dict:
    from transfuse.extract import write_features

    names = backbone_list(featurizer.backbone)
    if len(names) != 1:
        raise DataError(f"--features-out writes one backbone's features; run extract once per backbone "
                        f"({', '.join(names)})")
    done = write_features(source.items, out, labels=source.labels, backbone=names[0], layers=spec.layers,
                          pooling=spec.pooling, weights=spec.weights, cache=spec.cache, batch_size=spec.batch_size,
                          num_workers=spec.num_workers, device=spec.device, on_error="skip" if skip_bad else "raise",
                          long_text=spec.long_text, runtime=spec.runtime, precision=spec.precision)
    if done["unreadable"]:
        log.warning("skipped %d unreadable files: %s", len(done["unreadable"]), ", ".join(done["unreadable"][:5]))
    return {"items": done["items"], "unreadable": len(done["unreadable"]), "rows": done["rows"],
            "columns": done["columns"], "layers": done["layers"], "engines": {names[0]: done["engine"]},
            "features_out": str(out)}


def features_of(featurizer, source: Source, skip_bad: bool) -> tuple[np.ndarray, list[int]]:
    """Features of every item (filling the cache), and the positions of the unreadable ones (NaN
    rows; without ``skip_bad`` they stop the job after the others are cached)."""
    featurizer.configure(on_error="skip" if skip_bad else "raise")
    X = featurizer.fit_transform(source.items)
    bad = np.flatnonzero(np.isnan(X).any(axis=1)).tolist()
    if bad:
        log.warning("skipped %d unreadable files: %s", len(bad), ", ".join(source.items[i] for i in bad[:5]))
    return X, bad
