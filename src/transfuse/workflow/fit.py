"""``fit``: split, extract, train fusion/selection/head, score on the test split, save; with
``--backbone auto`` the source is chosen by ranking first."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.backbones import get_spec
from transfuse.blocks import from_slices
from transfuse.data.fingerprint import digest_ids
from transfuse.data.source import Source
from transfuse.data.split import without
from transfuse.errors import DataError
from transfuse.evaluate import classification_metrics, item_names, plot_confusion
from transfuse.featurizers import backbone_list, refuse_options
from transfuse.modeldir import TRAINING_ITEMS, check_destination
from transfuse.pipeline import make_model, save_model
from transfuse.recipe import Recipe
from transfuse.search import SearchResult, check_metric, default_recipes, search
from transfuse.workflow.extract import features_of
from transfuse.workflow.held_out import HeldOut
from transfuse.workflow.requests import AUTO, FeaturizerSpec, FitRequest, FitResult, OutputSpec, SplitSpec, command_line

log = logging.getLogger(__name__)


def fit(request: FitRequest) -> FitResult:
    """Split, extract features, train fusion/selection/head, score on the test split, save.

    With ``auto``, every combination of :func:`~transfuse.search.default_recipes` is scored by
    cross-validation on the training split and the best one is trained and saved (with the table
    of what was tried in ``search.json``).
    """
    source, recipe = request.source, request.recipe
    kept = {k: v for k, v in recipe.head_params.items() if k == "class_weight"}  # --auto searches with it
    if request.auto and (recipe.fusion or recipe.select or set(recipe.head_params) - set(kept)):
        raise DataError("--auto chooses the fusion, selection and C itself; drop --fusion, --select and "
                        "--head-param, or drop --auto")
    recipe.validate()  # bad names fail before any extraction
    check_metric(request.metric)
    if request.metric != "accuracy" and not request.auto:
        log.warning("--metric %s only steers the --auto search; without it the recipe is trained as given",
                    request.metric)
    train, test = request.split.indices(source)  # the one split; bad splits fail before extraction too
    choice = None
    spec = request.featurizer
    if spec.backbone == AUTO or (request.auto and spec.backbone is None and spec.layers is None
                                 and spec.weights == "pretrained"):
        # --auto without a backbone (or layers, or other weights) ranks the sources too, then searches
        # the chosen one's layers
        spec, choice = choose_source(source, train, request.featurizer, request.budget, request.split.seed,
                                     pick_layers=not request.auto)
        request = dataclasses.replace(request, featurizer=spec)
    featurizer = request.featurizer.build(source.kind)
    if featurizer.fitted:
        if choice is not None and request.auto:  # the ranking's verdict: no transfer; nothing to search
            log.info("--auto: %s ranked first; it has no layers to search, so it is trained as it is",
                     featurizer.kind)
            request = dataclasses.replace(request, auto=False)
        _check_fitted_options(featurizer, recipe, request.auto)
    out = request.output.path(source, request.featurizer.name(source.kind), recipe.head)
    if request.output.save:
        check_destination(out, force=request.output.force)  # nothing is lost, and no work is wasted
    y = np.asarray(source.labels)
    skipped: list[str] = []
    found = None
    start, seconds = time.perf_counter(), {"features": 0.0}  # what metrics.json records as "seconds"
    if featurizer.fitted:  # learned from the training split inside the pipeline: raw items go in
        X, steps = np.asarray(source.items, dtype=object), [("features", featurizer), *recipe.build({})]
    else:
        if request.auto and featurizer.layers is None:
            featurizer.set_params(layers=auto_layers(featurizer.backbone))
        X, bad = features_of(featurizer, source, request.skip_bad)
        seconds["features"] = round(time.perf_counter() - start, 2)
        if bad:
            skipped = [source.items[i] for i in bad]
            train, test = without(source, train, test, set(bad))
        blocks = from_slices(featurizer.slices_)
        if request.auto:
            began = time.perf_counter()
            found = search(X[train], y[train], blocks, default_recipes(blocks, recipe.head, head_params=kept),
                           cv=request.cv, seed=request.split.seed, metric=request.metric)
            recipe = found.best
            log.info("search picked: %s", found.reason)
            seconds["search"] = round(time.perf_counter() - began, 2)
        steps = recipe.build(blocks)
    log.info("training %s on %d items, testing on %d", recipe.label(), len(train), len(test))
    began = time.perf_counter()
    trained = Pipeline(steps).fit(X[train], y[train])
    seconds["training"] = round(time.perf_counter() - began, 2)
    head = trained.steps[-1][1]
    outputs = HeldOut.of(trained, X, y, train, test, item_names([source.items[i] for i in test], source.kind),
                         request.split.seed)
    metrics = classification_metrics(y[test], outputs.predicted, classes=[str(c) for c in head.classes_])
    metrics["split"] = {"train": len(train), "test": len(test), "seed": request.split.seed,
                        "test_size": request.split.test_size if source.splits is None else "manifest"}
    metrics["recipe"] = recipe.to_dict()
    metrics["seconds"] = {**seconds, "total": round(time.perf_counter() - start, 2)}
    if choice is not None:
        metrics["source_choice"] = choice
    if featurizer.fitted:
        model = trained
    else:
        metrics["extraction"] = dict(featurizer.engine_notes_)  # {"efficientnet_lite0": "torch bf16; cosine >= ..."}
        featurizer.configure(on_error="raise")
        model = make_model(featurizer, head, trained.steps[:-1])
    saved = None
    if request.output.save:
        seen = digest_ids([source.items[i] for i in train], source.kind)
        saved = _save_fit(model, out, metrics, found, request, recipe, len(skipped), seen, outputs)
    return FitResult(model=model, metrics=metrics, out_dir=saved, n_train=len(train), n_test=len(test),
                     skipped=skipped, search=found, held_out=outputs)


AUTO_SCORES = "logme,knn"  # the best mean over the image, text and audio harness targets (docs/benchmarks.md)


def choose_source(source: Source, train: list[int], spec: FeaturizerSpec, budget: float | None = None,
                  seed: int = 0, pick_layers: bool = True) -> tuple[FeaturizerSpec, dict]:
    """``--backbone auto``: rank the sources available for the data's kind (cheapest first, no new
    backbone started once ``budget`` seconds have passed) on the training split, and take the best
    candidate: a backbone and one tap, all its taps fused, or a fitted featurizer (without
    ``pick_layers`` only its backbone: ``--auto`` searches the layers). Returns the featurizer spec
    to use and the reasons (what :func:`fit` writes to ``metrics.json``)."""
    from transfuse.ranking import default_candidates, rank

    start = time.perf_counter()
    names = default_candidates(source.kind)
    rows = rank([source.items[i] for i in train], [source.labels[i] for i in train], names, score=AUTO_SCORES,
                resamples=0, seed=seed, budget=budget, pooling=spec.pooling, runtime=spec.runtime,
                precision=spec.precision, long_text=spec.long_text, batch_size=spec.batch_size,
                num_workers=spec.num_workers, device=spec.device, cache=spec.cache)
    best = rows[0]
    fitted = best["backbone"] == best["layer"]  # a fitted featurizer is its own only candidate
    layers = None if fitted or not pick_layers else _chosen_layers(best["backbone"], best["layer"])
    ranked = sorted({r["backbone"] for r in rows if "," not in r["backbone"]})  # the fused pair is no source
    why = (f"best combined rank under {AUTO_SCORES.replace(',', ', ')} of {len(rows)} candidates from "
           f"{len(ranked)} sources ({', '.join(ranked)}) on the {len(train)} training items, in "
           f"{time.perf_counter() - start:.0f}s" + ("" if pick_layers or fitted else "; --auto searches its layers"))
    log.info("--backbone auto chose %s %s: %s", best["backbone"], best["layer"], why)
    summary = [{k: r[k] for k in ("backbone", "layer", "dim", "scores", "rank")} for r in rows[:10]]
    choice = {"backbone": best["backbone"], "layer": best["layer"], "why": why, "ranking": summary,
              "skipped": sorted(set(names) - set(ranked))}
    chosen = dataclasses.replace(spec, backbone=best["backbone"], layers=layers)
    from transfuse.engines.planner import RUNTIMES

    engine = (best.get("engine") or "").split()
    if engine and engine[0] in RUNTIMES and spec.runtime == "auto" and spec.precision == "auto":
        # keep the engine the ranking measured with all taps, so its cached features are used as they are
        chosen = dataclasses.replace(chosen, runtime=engine[0], precision=engine[1])
        choice["engine"] = best["engine"]
    return chosen, choice


def _chosen_layers(backbone: str, layer: str) -> list[str]:
    """A ranked candidate's taps as ``--layers``: ``fused`` is every tap of the backbone; the fused
    pair ``"a,b"`` names each backbone's (``"a:tap,b:fused"``)."""
    from transfuse.ranking import FUSED

    if "," not in backbone:
        return get_spec(backbone).tap_names if layer == FUSED else [layer]
    out = []
    for part in layer.split(","):
        name, tap = part.rsplit(":", 1)
        out += [f"{name}:{t}" for t in _chosen_layers(name, tap)]
    return out


def fit_source(source: Source, *, backbone: str | None = None, layers: str | list[str] | None = None,
               pooling: str | None = None, weights: str = "pretrained", head: str = "logreg",
               head_params: dict | None = None, fusion: str | None = None, select: str | None = None,
               auto: bool = False, cv: int = 5, test_size: float = 0.2, seed: int = 0,
               skip_bad: bool = False, out_dir: str | Path | None = None, save: bool = True,
               batch_size: int | None = None, num_workers: int | None = None, device: str | None = None,
               cache: bool | str = True, long_text: str = "truncate", runtime: str = "auto",
               precision: str = "auto", metric: str = "accuracy") -> FitResult:
    """:func:`fit` with its request spelled out as keywords. ``backbone`` defaults to the built-in one
    for the source's modality (``efficientnet_lite0`` for images, ``minilm_l6`` for text); with
    ``auto`` and no ``layers`` it is chosen by ranking (``"auto"``).

    >>> res = fit_source(load_source("examples/fashion"), layers="blocks.5,features", fusion="concat")  # doctest: +SKIP
    >>> round(res.metrics["accuracy"], 2), res.out_dir  # doctest: +SKIP
    """
    return fit(FitRequest(
        source=source,
        featurizer=FeaturizerSpec(backbone=backbone, layers=layers, pooling=pooling, weights=weights, runtime=runtime,
                                  precision=precision, long_text=long_text, batch_size=batch_size,
                                  num_workers=num_workers, device=device, cache=cache),
        recipe=Recipe(fusion=fusion, select=select, head=head, head_params=dict(head_params or {})),
        split=SplitSpec(test_size=test_size, seed=seed), output=OutputSpec(out_dir=out_dir, save=save),
        auto=auto, cv=cv, skip_bad=skip_bad, metric=metric))


def _check_fitted_options(featurizer, recipe: Recipe, auto: bool) -> None:
    """A fitted featurizer's columns are not layer blocks: fusion, selection and search do not apply."""
    refuse_options(featurizer.kind, [flag for flag, value in (("--fusion", recipe.fusion), ("--select", recipe.select),
                                                              ("--auto", auto or None)) if value is not None])


def _save_fit(model, out: Path, metrics: dict, found: SearchResult | None, request: FitRequest, recipe: Recipe,
              n_skipped: int, seen: np.ndarray, outputs: HeldOut) -> Path:
    from transfuse.report import try_report

    source = request.source
    title = f"{request.featurizer.name(source.kind)} | {recipe.label()}"
    files = {"confusion_matrix.png": lambda path: plot_confusion(metrics, path, title=title), **outputs.files()}
    if found is not None:
        files["search.json"] = lambda path: path.write_text(
            json.dumps({"reason": found.reason, "candidates": found.table()}, indent=2) + "\n")
    saved = save_model(model, out, metrics=metrics, force=request.output.force, data={TRAINING_ITEMS: seen},
                       extra={"data": {"name": source.name, "kind": source.kind, "n_items": len(source) - n_skipped,
                                       "skipped": n_skipped, "per_class": source.counts()},
                              "command": command_line()}, files=files)
    try_report(saved)
    return saved


def auto_layers(backbone: str) -> list[str]:
    """Layers ``--auto`` tries when none are given: the last three hooked taps and ``features``
    (named ``<backbone>:<layer>`` when several backbones are fused), read from the specs."""
    backbones = backbone_list(backbone)
    names = []
    for name in backbones:
        every = get_spec(name).tap_names
        taps = [t for t in every if t not in ("features", "logits")][-3:] + (["features"] if "features" in every else [])
        names += [t if len(backbones) == 1 else f"{name}:{t}" for t in taps]
    return names
