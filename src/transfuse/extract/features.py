"""``extract_features``: resolve what is asked (backbone, taps, pooling, engine), keep what the
feature cache (or a Parquet feature data set) already holds, and extract the rest here or on a
Ray cluster."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from transfuse.backbones import get_spec, resolve_weights
from transfuse.cache import FeatureCache
from transfuse.config import default_device
from transfuse.data.fingerprint import item_digest
from transfuse.engines import COMPILE_MIN_ITEMS, Calibration, EngineStore, Plan, compile_pays, package_built, plan
from transfuse.errors import CorruptInputError, DataError
from transfuse.extract.context import CLUSTER, FEATURES_IN
from transfuse.extract.job import FORMAT, Job, ready_backbone
from transfuse.extract.local import run_local
from transfuse.taps import check_pooling, parse_layers

log = logging.getLogger("transfuse.extract")
_WHAT = {"image": "images", "audio": "audio", "sequence": "sequences"}


@dataclass
class Features:
    """Extracted features with their layout.

    ``X[:, slices[tap]]`` are the columns of one tap. Rows of items that could not be
    decoded (``failed``) are NaN.
    """

    X: np.ndarray
    slices: dict[str, slice]
    items: list[str]
    failed: list[int] = field(default_factory=list)
    n_extracted: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    engine: Plan | None = None  # the runtime and precision that computed (or would compute) them

    @property
    def feature_names(self) -> list[str]:
        return [f"{tap}:{i}" for tap, s in self.slices.items() for i in range(s.stop - s.start)]


def open_cache(cache: FeatureCache | bool | str | os.PathLike | None) -> FeatureCache | None:
    """``True`` -> the default cache, a path -> a cache there, ``False``/``None`` -> no cache."""
    if isinstance(cache, FeatureCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return FeatureCache(cache)
    return FeatureCache() if cache else None


@dataclass
class _Request:
    """One call resolved: the job, each item's digest, the unreadable ones, and what is still missing."""

    job: Job
    paths: list[str]
    digests: list[str]
    failed: set[str]
    missing: list[str]
    n_cached: int
    from_set: int = 0


def _resolve(paths, backbone, layers, pooling, weights, cache, device, on_error, long_text, runtime,
             precision, batch_size) -> _Request:
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    spec = get_spec(backbone)
    pooling = check_pooling(pooling, spec.modality)
    if long_text not in ("truncate", "chunk"):
        raise DataError(f"long_text must be 'truncate' or 'chunk', got {long_text!r}")
    weights_id = resolve_weights(spec, weights).identity
    taps = spec.check_taps(parse_layers(layers) or list(spec.default_taps))
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no inputs to extract features from")
    cluster = CLUSTER.get()
    if cluster is not None:  # the actors' device, not this machine's
        from transfuse.cluster import connect, worker_device

        device = worker_device(connect(cluster), device)
    device = device or default_device()
    store = open_cache(cache)
    engine_files = EngineStore(store.root if store is not None else None)

    failed: set[str] = set()
    digests: list[str] = []
    for i, p in enumerate(paths):
        try:
            digests.append(item_digest(p, spec.modality))
        except DataError as exc:
            if on_error == "raise":
                raise CorruptInputError(f"{exc}", [p]) from None
            digests.append(f"unreadable:{i}")
            failed.add(digests[-1])

    preprocess = spec.input_spec.identity()
    if spec.modality == "text" and long_text != "truncate":
        preprocess += f"|long_text={long_text}"
    good_paths = [p for p, d in zip(paths, digests) if d not in failed]
    wanted = [d for d in dict.fromkeys(digests) if d not in failed]

    def job_for(engine: Plan) -> Job:
        return Job(spec.name, weights, weights_id, taps, pooling, preprocess, store, long_text, engine, device=device)

    def compile_worth(pr: str) -> bool:  # see engines.compile_pays; cheap answers first
        if cluster is not None:  # packages are built per machine: ask for --runtime compile on a cluster
            return False
        exists = package_built(engine_files, spec.name, weights_id, pr, device)
        if not exists and len(wanted) < COMPILE_MIN_ITEMS:
            return False
        others = [Plan("torch", pr)] + [Plan("onnx", pr)] * (pr == "fp32")  # what auto would run instead
        return compile_pays(job_for(Plan("compile", pr)).pending(wanted),
                            min(job_for(other).pending(wanted) for other in others), exists)

    feature_set = None
    if FEATURES_IN.get() is not None:
        from transfuse.extract.parquet import FeatureSet

        feature_set = FeatureSet(FEATURES_IN.get())
        if feature_set.same_source(spec.name, weights_id, pooling):  # auto takes the engine it was computed with
            engine = feature_set.meta.get("engine", {})
            runtime = engine.get("runtime", runtime) if runtime == "auto" else runtime
            precision = engine.get("precision", precision) if precision == "auto" else precision
    calibration = dict(store=engine_files, name=spec.name, weights_id=weights_id, items=good_paths, taps=taps,
                       pooling=pooling, preprocess=f"{preprocess}|{FORMAT}", device=device)
    if cluster is not None:
        from transfuse.engines.calibrate import CALIBRATION_ITEMS
        from transfuse.extract.on_ray import measure_on_worker

        few = calibration | {"items": good_paths[:4 * CALIBRATION_ITEMS]}  # what it reads, not every path
        measure = measure_on_worker(few, weights, long_text)
    else:
        measure = Calibration(**calibration, backbone=lambda: ready_backbone(spec.name, weights, weights_id, device,
                                                                            long_text))
    job = job_for(plan(spec, runtime, precision, device, measure, compile_worth=compile_worth))
    if store is not None:
        for tap in taps:  # missing: not stored, or in a shard that vanished or changed (extracted again)
            job.needed[tap] = set(store.missing(job.keys[tap], wanted))
    else:
        job.needed = {tap: set(wanted) for tap in taps}
    from_set = 0
    if feature_set is not None:
        from_set = feature_set.load(job, wanted)
        if not feature_set.matches(job):
            log.warning("--features-in %s is not used: %s", feature_set.path, feature_set.mismatch(job))
    missing = [d for d in wanted if any(d in job.needed[tap] for tap in taps)]
    return _Request(job, paths, digests, failed, missing, len(wanted) - len(missing), from_set)


def _extract_missing(req: _Request, batch_size, num_workers, progress) -> None:
    """Compute the missing rows here or on the cluster; unreadable items join ``req.failed``."""
    if not req.missing:
        return
    first_path = {d: p for p, d in zip(req.paths, req.digests)}
    todo = [first_path[d] for d in req.missing]
    if CLUSTER.get() is not None:
        from transfuse.extract.on_ray import run_on_ray

        req.failed |= run_on_ray(req.job, todo, req.missing, batch_size, progress)
    else:
        req.failed |= run_local(req.job, todo, req.missing, batch_size, num_workers, progress)


def extract_features(
    paths: list[str],
    backbone: str = "efficientnet_lite0",
    layers: str | list[str] | None = None,
    pooling: str | None = None,
    weights: str = "pretrained",
    cache: FeatureCache | bool | str | os.PathLike = True,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | None = None,
    on_error: str = "raise",
    progress: bool | None = None,
    long_text: str = "truncate",
    runtime: str = "auto",
    precision: str = "auto",
) -> Features:
    """Features of every image in ``paths`` for each requested tap, concatenated.

    Items whose features are cached (same bytes, backbone, weights, preprocessing, tap and
    pooling) are not recomputed; new ones are extracted in one forward pass per batch and
    written to the cache every few hundred items, so a killed run resumes where it stopped.
    ``on_error="skip"`` returns undecodable items as NaN rows listed in ``failed``;
    ``"raise"`` extracts everything else, then raises :class:`CorruptInputError`.
    Items are image paths, texts or audio paths as the backbone's ``modality`` says; texts
    longer than a text encoder's window are truncated or (``long_text="chunk"``) read in windows
    whose features are averaged. ``runtime`` (auto, torch, compile, onnx) and ``precision`` (auto,
    fp32, bf16) pick the engine (see :mod:`transfuse.engines`); the resolved pair is part of the cache key.
    Inside :func:`~transfuse.extract.on_cluster` the missing items are extracted on a Ray cluster;
    inside :func:`~transfuse.extract.features_in` rows come from a Parquet feature data set first.

    >>> f = extract_features(["a.png", "b.png"], layers="blocks.4,features")  # doctest: +SKIP
    >>> f.X.shape, f.slices["features"]  # doctest: +SKIP
    ((2, 1392), slice(112, 1392, None))
    """
    start = time.perf_counter()
    req = _resolve(paths, backbone, layers, pooling, weights, cache, device, on_error, long_text, runtime,
                   precision, batch_size)
    _extract_missing(req, batch_size, num_workers, progress)
    job, paths, digests = req.job, req.paths, req.digests
    what = _WHAT.get(get_spec(backbone).modality, "images")
    bad = [i for i, d in enumerate(digests) if d in req.failed]
    if bad and on_error == "raise":
        raise CorruptInputError.unreadable([paths[i] for i in bad], len(paths), what)
    bad_set = set(bad)
    good = [i for i in range(len(paths)) if i not in bad_set]
    if not good:
        raise CorruptInputError(f"none of the {len(paths)} files could be read as {what}", paths)
    good_digests = [digests[i] for i in good]
    slices: dict[str, slice] = {}
    widths = {tap: job.width(tap) for tap in job.taps}
    col = 0
    for tap in job.taps:
        slices[tap] = slice(col, col + widths[tap])
        col += widths[tap]
    X = np.full((len(paths), col), np.nan, dtype=np.float32) if bad else np.empty((len(paths), col), np.float32)
    for tap in job.taps:  # filled in place one tap at a time, so peak memory stays near the output size
        part = job.rows(tap, good_digests)
        if part.shape[1] != widths[tap]:
            raise DataError(f"cached features of layer {tap} have width {part.shape[1]}, expected "
                            f"{widths[tap]}; run `transfuse cache prune --backbone {job.backbone}`")
        X[good if bad else slice(None), slices[tap]] = part
        del part
    n_new = len(req.missing)
    feats = Features(X=X, slices=slices, items=paths, failed=bad, n_extracted=n_new,
                     n_cached=req.n_cached, seconds=time.perf_counter() - start, engine=job.engine)
    speed = f" at {n_new / job.forward_seconds:.1f}/s" if n_new and job.forward_seconds else ""
    where = " on Ray" if n_new and CLUSTER.get() is not None else ""
    parquet = f" ({req.from_set} from --features-in)" if req.from_set else ""
    log.info("features: %d items, %d extracted%s (%s), %d from cache%s, %d failed, %d columns (%.1fs)",
             len(paths), n_new, where, job.engine.label(speed), req.n_cached, parquet, len(bad), X.shape[1],
             feats.seconds)
    return feats


def write_features(paths: list[str], out: str | os.PathLike, labels: list[str] | None = None,
                   backbone: str = "efficientnet_lite0", layers: str | list[str] | None = None,
                   pooling: str | None = None, weights: str = "pretrained",
                   cache: FeatureCache | bool | str | os.PathLike = True, batch_size: int | None = None,
                   num_workers: int | None = None, device: str | None = None, on_error: str = "raise",
                   progress: bool | None = None, long_text: str = "truncate", runtime: str = "auto",
                   precision: str = "auto") -> dict:
    """The features of ``paths`` as a Parquet data set in the new folder ``out`` (see
    :mod:`transfuse.extract.parquet`), with ``labels`` when given. Inside
    :func:`~transfuse.extract.on_cluster` every item goes to the cluster and the workers write the
    part files (the driver's cache is neither read nor filled: the job may not fit on its disk);
    here, cached rows are reused and one part file is written. Returns items, rows written and
    the unreadable items.

    >>> write_features(paths, "features/", labels=labels, layers="features")  # doctest: +SKIP
    {'items': 2000, 'rows': 2000, 'unreadable': [], 'layers': ['features'], 'columns': 1280, ...}
    """
    from transfuse.extract import parquet

    parquet.check_new(out)
    on_ray = CLUSTER.get() is not None
    req = _resolve(paths, backbone, layers, pooling, weights, False if on_ray else cache, device, on_error,
                   long_text, runtime, precision, batch_size)
    if len(req.failed) == len(set(req.digests)):
        raise CorruptInputError(f"none of the {len(req.paths)} files could be read", req.paths)
    if on_ray:
        from transfuse.extract.on_ray import write_on_ray

        keep = [i for i, d in enumerate(req.digests) if d not in req.failed]
        failed, sidecar = write_on_ray(req.job, [req.paths[i] for i in keep], [req.digests[i] for i in keep],
                                       None if labels is None else [str(labels[i]) for i in keep], os.fspath(out),
                                       batch_size)
        req.failed |= failed
    else:
        _extract_missing(req, batch_size, num_workers, progress)
        if len(req.failed) == len(set(req.digests)):
            raise CorruptInputError(f"none of the {len(req.paths)} files could be read", req.paths)
        sidecar = parquet.write_local(out, req.job, req.paths, req.digests,
                                      None if labels is None else [str(x) for x in labels], req.failed)
    bad = [p for p, d in zip(req.paths, req.digests) if d in req.failed]
    if bad and on_error == "raise":
        why = CorruptInputError.unreadable(bad, len(req.paths), _WHAT.get(get_spec(backbone).modality, "images"),
                                           cached=False)
        raise CorruptInputError(f"{why}; {out} holds the others' rows (delete it before running again)", bad)
    log.info("features of %d items written to %s (%d rows, %s)", len(req.paths), out, sidecar["rows"],
             req.job.engine.label(""))
    return {"items": len(req.paths), "rows": sidecar["rows"], "unreadable": bad, "layers": req.job.taps,
            "columns": sum(sidecar["widths"].values()), "engine": req.job.engine.label("")}
