"""End-to-end jobs behind the CLI: fit (split, extract, train, score, save), evaluate, predict."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

from transfuse.blocks import from_slices
from transfuse.data.source import Source
from transfuse.data.split import split_source
from transfuse.errors import DataError
from transfuse.evaluate import classification_metrics, plot_confusion
from transfuse.extract import FeatureExtractor, backbone_list
from transfuse.recipe import Recipe
from transfuse.search import SearchResult, default_recipes, search
from transfuse.pipeline import load_model, make_model, save_model

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What ``fit`` produced: the fitted pipeline, its test metrics and where it was saved."""

    model: Pipeline
    metrics: dict
    out_dir: Path | None
    n_train: int
    n_test: int
    skipped: list[str]
    search: SearchResult | None = None


def default_out_dir(source: Source, backbone: str, head: str) -> Path:
    """``transfuse-models/<data>-<backbone>-<head>-<timestamp>`` under the working directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("transfuse-models") / f"{source.name}-{backbone.replace(':', '_')}-{head}-{stamp}"


def drop_unreadable(source: Source, extractor: FeatureExtractor, skip_bad: bool) -> tuple[Source, np.ndarray, list[str]]:
    """Extract features of every item (filling the cache); drop or reject undecodable ones."""
    extractor.set_params(on_error="skip" if skip_bad else "raise")
    X = extractor.fit_transform(source.items)
    failed = np.flatnonzero(np.isnan(X).any(axis=1))
    bad = [source.items[i] for i in failed]
    if bad:
        log.warning("skipped %d unreadable files: %s", len(bad), ", ".join(bad[:5]))
    keep = np.setdiff1d(np.arange(len(source)), failed)
    return source.subset(keep.tolist()), X[keep], bad


def auto_layers(backbone: str, weights: str = "pretrained") -> list[str]:
    """Layers ``--auto`` tries when none are given: the last three hooked taps and ``features``
    (named ``<backbone>:<layer>`` when several backbones are fused)."""
    from transfuse.backbones import create_backbone

    backbones = backbone_list(backbone)
    names = []
    for name in backbones:
        taps = [t.name for t in create_backbone(name, weights=weights).taps if t.name not in ("features", "logits")]
        names += [t if len(backbones) == 1 else f"{name}:{t}" for t in taps[-3:] + ["features"]]
    return names


def fit_source(source: Source, *, backbone: str | None = None, layers: str | list[str] | None = None,
               pooling: str | None = None, weights: str = "pretrained", head: str = "logreg",
               head_params: dict | None = None, fusion: str | None = None, select: str | None = None,
               auto: bool = False, cv: int = 5, test_size: float = 0.2, seed: int = 0,
               skip_bad: bool = False, out_dir: str | Path | None = None, save: bool = True,
               batch_size: int | None = None, num_workers: int | None = None, device: str | None = None,
               cache: bool | str = True, long_text: str = "truncate", runtime: str = "auto",
               precision: str = "auto") -> FitResult:
    """Split ``source``, extract features, train fusion/selection/head, score on the test split, save.

    With ``auto``, every combination of :func:`~transfuse.search.default_recipes` is scored by
    cross-validation on the training split and the best one is trained and saved (with the
    table of what was tried in ``search.json``). ``backbone`` defaults to the built-in one for the
    source's modality (``efficientnet_lite0`` for images, ``minilm_l6`` for text).

    >>> res = fit_source(load_source("examples/fashion"), layers="blocks.5,features", fusion="concat")  # doctest: +SKIP
    >>> round(res.metrics["accuracy"], 2), res.out_dir  # doctest: +SKIP
    """
    if auto and (fusion or select or head_params):
        raise DataError("--auto chooses the fusion, selection and C itself; drop --fusion, --select and "
                        "--head-param, or drop --auto")
    from transfuse.backbones import check_modality, default_backbone

    backbone = backbone or default_backbone(source.kind)
    check_modality(backbone_list(backbone), source.kind)
    recipe = Recipe(fusion=fusion, select=select, head=head, head_params=dict(head_params or {}))
    recipe.validate()  # bad names fail before any extraction
    split_source(source, test_size=test_size, seed=seed)  # bad splits fail before extraction too
    from transfuse.runtime import check_request

    check_request(runtime, precision)
    fitted_first = _fitted_featurizer(backbone, layers=layers, pooling=pooling, weights=weights, auto=auto,
                                      recipe=recipe, runtime=runtime, precision=precision)
    found = None
    if fitted_first is not None:  # tfidf: learned from the training split inside the pipeline, no cache
        X, skipped = np.asarray(source.items, dtype=object), []
        train, test = split_source(source, test_size=test_size, seed=seed)
        y = np.asarray(source.labels)
        steps = [("features", fitted_first), *recipe.build({})]
    else:
        if auto and layers is None:
            layers = auto_layers(backbone, weights)
        extractor = FeatureExtractor(backbone=backbone, layers=layers, pooling=pooling, weights=weights,
                                     batch_size=batch_size, num_workers=num_workers, device=device, cache=cache,
                                     long_text=long_text, runtime=runtime, precision=precision)
        source, X, skipped = drop_unreadable(source, extractor, skip_bad)
        train, test = split_source(source, test_size=test_size, seed=seed)
        y = np.asarray(source.labels)
        blocks = from_slices(extractor.slices_)
        if auto:
            found = search(X[train], y[train], blocks, default_recipes(blocks, head), cv=cv, seed=seed)
            recipe = found.best
            log.info("search picked: %s", found.reason)
        steps = recipe.build(blocks)
    log.info("training %s on %d items, testing on %d", recipe.label(), len(train), len(test))
    fitted = Pipeline(steps).fit(X[train], y[train])
    head_est = fitted.steps[-1][1]
    metrics = classification_metrics(y[test], fitted.predict(X[test]), classes=[str(c) for c in head_est.classes_])
    metrics["split"] = {"train": len(train), "test": len(test), "seed": seed,
                        "test_size": test_size if source.splits is None else "manifest"}
    metrics["recipe"] = recipe.to_dict()
    if fitted_first is not None:
        model = fitted
    else:
        metrics["extraction"] = dict(extractor.engine_notes_)  # {"efficientnet_lite0": "torch bf16; cosine >= ..."}
        extractor.set_params(on_error="raise")
        model = make_model(extractor, head_est, fitted.steps[:-1])
    saved = None
    if save:
        title = f"{backbone} | {recipe.label()}"
        files = {"confusion_matrix.png": lambda path: plot_confusion(metrics, path, title=title)}
        if found is not None:
            files["search.json"] = lambda path: path.write_text(
                json.dumps({"reason": found.reason, "candidates": found.table()}, indent=2) + "\n")
        saved = save_model(
            model, out_dir or default_out_dir(source, backbone, head), metrics=metrics,
            extra={"data": {"name": source.name, "kind": source.kind, "n_items": len(source),
                            "skipped": len(skipped)}}, files=files)
    return FitResult(model=model, metrics=metrics, out_dir=saved, n_train=len(train), n_test=len(test),
                     skipped=skipped, search=found)


def _fitted_featurizer(backbone: str, *, layers, pooling, weights: str, auto: bool, recipe: Recipe,
                       runtime: str = "auto", precision: str = "auto"):
    """A fresh first pipeline step for a backbone learned from the training split (``tfidf``), or
    None for a network; options that only make sense for networks are rejected clearly."""
    from transfuse.backbones import get_spec

    names = backbone_list(backbone)
    fitted = [n for n in names if get_spec(n).fitted]
    if not fitted:
        return None
    name = fitted[0]
    if len(names) > 1:
        raise DataError(f"{name} is fitted on the training texts and cannot be fused with other backbones; "
                        f"fit it on its own with --backbone {name}")
    given = [flag for flag, value in (("--layers", layers), ("--pooling", pooling), ("--fusion", recipe.fusion),
                                      ("--select", recipe.select), ("--auto", auto or None),
                                      ("--runtime", None if runtime == "auto" else runtime),
                                      ("--precision", None if precision == "auto" else precision))
             if value is not None]
    if weights != "pretrained":
        given.append("--weights")
    if given:
        raise DataError(f"{name} has no layers, pooling, weights or engine to choose: drop {', '.join(given)} "
                        f"(set the head's C with --head-param C=...)")
    from transfuse.backbones.tfidf import TfidfFeatures

    return TfidfFeatures()


def evaluate_dir(model_dir: str | Path, source: Source, skip_bad: bool = False, **overrides) -> dict:
    """Metrics of a saved model on every (readable, with ``skip_bad``) item of a labelled ``source``."""
    model = load_model(model_dir, **overrides)
    from transfuse.pipeline import model_modality

    if model_modality(model) != source.kind:
        raise DataError(f"{model_dir} reads {model_modality(model)} but the data is {source.kind}; evaluate it "
                        f"on {model_modality(model)} data")
    classes = [str(c) for c in model.classes_] if not isinstance(model, Pipeline) else \
        [str(c) for c in model.named_steps["head"].classes_]
    unknown = sorted(set(source.labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not classes of the model ({', '.join(classes)}); "
                        f"rename the folders or evaluate on matching data")
    ok, labels, _ = predict_arrays(model, source.items, on_error="skip" if skip_bad else "raise")
    truth = [lab for lab, good in zip(source.labels, ok) if good]
    metrics = classification_metrics(truth, [str(p) for p in labels], classes=classes)
    metrics["skipped"] = int((~ok).sum())
    return metrics


def predict_arrays(model, paths: list[str], on_error: str = "raise") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(readable mask, labels of the readable items, their probabilities or None)`` for a probe
    pipeline or a fine-tuned model; unreadable files raise unless ``on_error="skip"``."""
    if isinstance(model, Pipeline):
        extractor, head, rest = model.named_steps["features"], model.named_steps["head"], model[1:]
        if "on_error" in extractor.get_params():
            extractor.set_params(on_error=on_error)
        X = extractor.transform(paths)
        ok = np.ones(X.shape[0], bool) if sp.issparse(X) else ~np.isnan(X).any(axis=1)  # tfidf reads any text
        if not ok.any():
            return ok, np.array([]), None
        proba = rest.predict_proba(X[ok]) if hasattr(head, "predict_proba") else None
        return ok, rest.predict(X[ok]), proba
    from transfuse.extract import unreadable_error

    ok, proba = model.scores(paths)
    if not ok.all() and on_error == "raise":
        raise unreadable_error([p for p, good in zip(paths, ok) if not good], len(paths))
    return ok, model.classes_[proba.argmax(1)], proba


def predict_paths(model, paths: list[str], on_error: str = "raise") -> list[dict]:
    """One record per input: ``path`` (``text`` for a text model), ``label`` and per-class
    ``probabilities`` (when the model has them)."""
    from transfuse.pipeline import model_modality

    key = "text" if model_modality(model) == "text" else "path"
    ok, labels, proba = predict_arrays(model, paths, on_error)
    classes = model.classes_ if not isinstance(model, Pipeline) else model.named_steps["head"].classes_
    records: list[dict] = [{key: p, "label": None, "error": "unreadable"} for p in paths]
    for j, i in enumerate(np.flatnonzero(ok)):
        rec = {key: paths[i], "label": str(labels[j])}
        if proba is not None:
            rec["probabilities"] = {str(c): float(p) for c, p in zip(classes, proba[j])}
        records[i] = rec
    return records


def compare_source(source: Source, out_dir: str | Path, *, backbone: str | None = None,
                   strategies: tuple[str, ...] = ("head", "lp-ft"), epochs: int = 10, image_size: int = 128,
                   seed: int = 0, test_size: float = 0.2, skip_bad: bool = False, progress: bool | None = None,
                   **finetune_params) -> list[dict]:
    """Same split, same budget: training from scratch, the feature probe, and each fine-tuning strategy.

    Each run is saved under ``out_dir/<method>``; returns one row per method.
    """
    from transfuse.backbones import default_backbone
    from transfuse.finetune.train import FinetuneConfig, finetune_source

    backbone = backbone or default_backbone(source.kind)
    _check_trainable(backbone)  # before the probe is trained, not after
    out = Path(out_dir)
    rows = []
    start = time.perf_counter()
    probe = fit_source(source, backbone=backbone, seed=seed, test_size=test_size, skip_bad=skip_bad,
                       out_dir=out / "probe")
    rows.append({"method": "feature probe (logreg on features)", **_summary(probe.metrics),
                 "seconds": time.perf_counter() - start, "model_dir": str(out / "probe")})
    runs = [("from scratch (full, random init)", "full", True)] + [(f"fine-tune {s}", s, False) for s in strategies]
    for label, strategy, scratch in runs:
        cfg = FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=scratch, epochs=epochs,
                             image_size=image_size, seed=seed, **finetune_params)
        name = "scratch" if scratch else strategy.replace(":", "")
        metrics = finetune_source(source, cfg, out / name, test_size=test_size, split_seed=seed, skip_bad=skip_bad,
                                  progress=progress)
        rows.append({"method": label, **_summary(metrics), "seconds": metrics["train_seconds"],
                     "model_dir": str(out / name)})
    return rows


def _check_trainable(backbone: str) -> None:
    from transfuse.backbones import get_spec

    spec = get_spec(backbone)
    if spec.modality == "audio" or not spec.trainable:
        what = "fitted on the training texts, not a network" if spec.fitted else "a frozen encoder"
        raise DataError(f"{backbone} cannot be fine-tuned ({what}), so there is nothing to compare with "
                        f"the probe; use `transfuse fit`, or another backbone to compare sources")


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
