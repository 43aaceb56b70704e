"""End-to-end jobs behind the CLI: fit (split, extract, train, score, save), fine-tune, compare,
evaluate, predict.

A job takes one request: the data, how it is split, which featurizer, which recipe, where the
result goes. The data is split once, before any extraction; items that cannot be read are then
left out of that split (no reshuffle).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.atomic import atomic_write_text
from transfuse.backbones import default_backbone, get_spec
from transfuse.blocks import from_slices
from transfuse.data.fingerprint import digest_id, digest_ids
from transfuse.data.source import Source
from transfuse.data.split import split_source, without
from transfuse.engines import check_request
from transfuse.errors import CorruptInputError, DataError
from transfuse.evaluate import classification_metrics, item_names, plot_confusion
from transfuse.featurizers import backbone_list, check_trainable, make_featurizer, refuse_options
from transfuse.modeldir import TRAINING_ITEMS, check_destination, is_model_dir, load_data
from transfuse.pipeline import load_model, make_model, model_classes, model_modality, pipeline_outputs, save_model
from transfuse.recipe import Recipe
from transfuse.search import SearchResult, check_metric, default_recipes, search

log = logging.getLogger(__name__)


# -- requests ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitSpec:
    """How labelled data is split: a seeded, stratified ``test_size`` of each class (or the
    manifest's ``split`` column)."""

    test_size: float = 0.2
    seed: int = 0

    def indices(self, source: Source) -> tuple[list[int], list[int]]:
        return split_source(source, test_size=self.test_size, seed=self.seed)


@dataclass(frozen=True)
class FeaturizerSpec:
    """Which featurizer turns items into features (see :func:`~transfuse.featurizers.make_featurizer`)
    and how it runs; ``backbone`` None means the data's modality's default."""

    backbone: str | None = None
    layers: str | list[str] | None = None
    pooling: str | None = None
    weights: str = "pretrained"
    runtime: str = "auto"
    precision: str = "auto"
    long_text: str = "truncate"
    batch_size: int | None = None
    num_workers: int | None = None
    device: str | None = None
    cache: object = True

    def name(self, modality: str) -> str:
        return self.backbone or default_backbone(modality)

    def build(self, modality: str):
        check_request(self.runtime, self.precision)
        return make_featurizer(self.backbone, modality, layers=self.layers, pooling=self.pooling,
                               weights=self.weights, runtime=self.runtime, precision=self.precision,
                               long_text=self.long_text, batch_size=self.batch_size, num_workers=self.num_workers,
                               device=self.device, cache=self.cache)


@dataclass(frozen=True)
class OutputSpec:
    """Where results go: ``out_dir``, or ``transfuse-models/<data>-<what>-<time>`` (see
    :func:`default_out_dir`); ``save=False`` keeps them in memory. A folder that holds something
    other than a transfuse model is refused (before any work) unless ``force``."""

    out_dir: str | Path | None = None
    save: bool = True
    force: bool = False

    def path(self, source: Source, *what: str) -> Path:
        """Where this job's results go; never inside the data folder (the next run would read them as a
        class), whatever ``force`` says."""
        out = Path(self.out_dir) if self.out_dir is not None else default_out_dir(source, *what)
        if source.root is not None:
            data = Path(source.root)
            resolved = out.resolve()
            if resolved == data or data in resolved.parents or resolved in data.parents:
                raise DataError(f"--out {out} is inside the data folder {data} (or holds it): a model there would be "
                                f"read as a class by the next run; choose a folder outside the data")
        return out


@dataclass(frozen=True)
class FitRequest:
    """One ``fit``: the data, its split, the featurizer, the recipe (or ``auto``: search recipes by
    ``cv``-fold cross-validation on the training split), where the model goes, and whether
    unreadable items are left out (``skip_bad``) or stop the job."""

    source: Source
    featurizer: FeaturizerSpec = field(default_factory=FeaturizerSpec)
    recipe: Recipe = field(default_factory=Recipe)
    split: SplitSpec = field(default_factory=SplitSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    auto: bool = False
    cv: int = 5
    skip_bad: bool = False
    budget: float | None = None  # seconds for choosing the source when featurizer.backbone is "auto"
    metric: str = "accuracy"  # what the --auto search maximises: accuracy, balanced_accuracy, macro_f1


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
    held_out: HeldOut | None = None  # the test split's predictions (and the head's input): what the report reads


def default_out_dir(source: Source, *what: str) -> Path:
    """``transfuse-models/<data>-<what...>-<timestamp>`` under the working directory: the one place a
    default output folder is named (fit, finetune, compare)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # names may hold paths (local:/runs/src, keras:model.keras): one folder name of safe characters
    parts = [source.name, *(re.sub(r"[^A-Za-z0-9.,=+-]+", "_", w).strip("_") for w in what), stamp]
    return Path("transfuse-models") / "-".join(parts)


# -- fit ----------------------------------------------------------------------------------------------

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
        X, bad = _extract(featurizer, source, request.skip_bad)
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


AUTO = "auto"  # --backbone auto: the source is chosen by ranking
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
    X, bad = _extract(featurizer, source, skip_bad)
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


def _extract(featurizer, source: Source, skip_bad: bool) -> tuple[np.ndarray, list[int]]:
    """Features of every item (filling the cache), and the positions of the unreadable ones (NaN
    rows; without ``skip_bad`` they stop the job after the others are cached)."""
    featurizer.configure(on_error="skip" if skip_bad else "raise")
    X = featurizer.fit_transform(source.items)
    bad = np.flatnonzero(np.isnan(X).any(axis=1)).tolist()
    if bad:
        log.warning("skipped %d unreadable files: %s", len(bad), ", ".join(source.items[i] for i in bad[:5]))
    return X, bad


MAP_TRAIN = 2000  # training items drawn on the report's map


@dataclass
class HeldOut:
    """What the trained pipeline gives on the test split (and the head's input on both splits, for
    the report's 2-D map): computed once, saved as ``predictions.csv`` and ``map.csv``."""

    items: list
    truth: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray | None
    probabilities: bool
    classes: list[str]
    head_input: tuple  # (train features, train labels, test features)

    @classmethod
    def of(cls, trained: Pipeline, X, y: np.ndarray, train: list[int], test: list[int], items: list,
           seed: int = 0) -> HeldOut:
        """Predictions on the test split; the head's input of the test items and of at most
        :data:`MAP_TRAIN` seeded training items (what the map draws)."""
        head = trained.steps[-1][1]
        before = Pipeline(trained.steps[:-1]) if len(trained.steps) > 1 else None
        drawn = np.asarray(train)[np.random.default_rng(seed).permutation(len(train))[:MAP_TRAIN]]
        Z_train, Z_test = (X[drawn], X[test]) if before is None else (before.transform(X[drawn]),
                                                                      before.transform(X[test]))
        probabilities = hasattr(head, "predict_proba")
        scores = head.predict_proba(Z_test) if probabilities else \
            head.decision_function(Z_test) if hasattr(head, "decision_function") else None
        return cls(items, y[test], head.predict(Z_test), scores, probabilities, [str(c) for c in head.classes_],
                   (Z_train, y[drawn], Z_test))

    def files(self) -> dict:
        """``{file name: writer}`` for :func:`~transfuse.pipeline.save_model`."""
        from transfuse.evaluate import MAP, PREDICTIONS, write_map, write_predictions

        Z_train, y_train, Z_test = self.head_input
        return {PREDICTIONS: lambda path: write_predictions(path, self.items, self.truth, self.predicted, self.scores,
                                                            self.classes, self.probabilities),
                MAP: lambda path: write_map(path, Z_train, y_train, Z_test, self.truth)}


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


def command_line() -> str | None:
    """The command that is running, when it is the ``transfuse`` CLI (what the report says reproduces it)."""
    import shlex
    import sys

    argv = sys.argv
    return shlex.join(["transfuse", *argv[1:]]) if argv and Path(argv[0]).name == "transfuse" else None


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


# -- fine-tune and compare -----------------------------------------------------------------------------

def finetune(source: Source, config, output: OutputSpec | None = None, split: SplitSpec | None = None, *,
             resume: bool = False, skip_bad: bool = False, num_workers: int | None = None, devices: int = 1,
             num_nodes: int = 1, progress: bool | None = None) -> tuple[dict, Path]:
    """Fine-tune ``config.backbone`` (a :class:`~transfuse.finetune.config.FinetuneConfig`) on the
    training split, score on the test split (the same split as ``fit`` for the same seed), save.
    ``devices`` processes per machine on ``num_nodes`` machines train with DDP (docs/scale-out.md).
    Returns the metrics (empty in the extra processes of a DDP run) and the model directory."""
    from transfuse.finetune.train import finetune_source

    output, split = output or OutputSpec(), split or SplitSpec()
    check_trainable(config.backbone)
    if resume and output.out_dir is None:
        raise DataError("--resume needs --out DIR of the run to continue")
    out = output.path(source, config.backbone, config.run_name)
    if devices * num_nodes > 1 and output.out_dir is None:
        if num_nodes > 1:  # each machine would pick its own time-stamped folder
            raise DataError("--num-nodes needs --out DIR (the same on every machine)")
        out = Path(os.environ.setdefault("TRANSFUSE_DDP_OUT", str(out)))  # DDP re-runs the command per process
    metrics = finetune_source(source, config, out, test_size=split.test_size, split_seed=split.seed, resume=resume,
                              skip_bad=skip_bad, num_workers=num_workers, devices=devices, num_nodes=num_nodes,
                              progress=progress, force=output.force)
    return metrics, out


SOURCE_ARCHS = {"small-cnn": "small_cnn", "vgg11": "vgg11", "resnet18": "timm:resnet18", "gru": "gru",
                "lstm": "lstm"}  # --arch -> backbone


def source_backbone(arch: str, source: Source, image_size: int | None = None) -> str:
    """The backbone ``train-source --arch`` trains for ``source``: ``small_cnn@N`` for small-cnn at
    another size, ``gru@W``/``lstm@W`` for frames of W values."""
    if arch not in SOURCE_ARCHS:
        raise DataError(f"unknown source architecture {arch!r}; choose one of {', '.join(SOURCE_ARCHS)}")
    if arch in ("gru", "lstm"):
        if source.kind != "sequence":
            raise DataError(f"--arch {arch} trains on sequences (.npy frames or an .npz array file); this data is "
                            f"{source.kind}: use small-cnn, vgg11 or resnet18")
        if image_size is not None:
            raise DataError("--image-size applies to images; a recurrent network reads sequences of any length")
        from transfuse.backbones.rnn import rnn_name
        from transfuse.data.sequences import sequence_width

        return rnn_name(arch, sequence_width(source.items))
    if source.kind != "image":
        raise DataError(f"--arch {arch} trains on images; this data is {source.kind}"
                        f"{': use gru or lstm' if source.kind == 'sequence' else ''}")
    if arch == "small-cnn" and image_size not in (None, 28):
        return f"small_cnn@{image_size}"
    return SOURCE_ARCHS[arch]


def train_source(source: Source, arch: str | None = None, output: OutputSpec | None = None,
                 split: SplitSpec | None = None, *, image_size: int | None = None, **settings) -> tuple[dict, Path]:
    """Train a network from scratch on a source task and save it as a source for transfer: afterwards
    ``--backbone local:<folder>`` uses it in every command. ``settings`` are
    :class:`~transfuse.finetune.config.FinetuneConfig` fields (epochs, lr, batch_size, patience, ...)
    and :func:`finetune`'s keywords (resume, skip_bad, num_workers, devices, progress). Every layer
    trains at one learning rate (no layer decay: nothing is pretrained).

    >>> train_source(load_source("fashion-source"), "small-cnn", OutputSpec("sources/fashion"))  # doctest: +SKIP
    """
    from transfuse.finetune.config import FinetuneConfig

    arch = arch or ("gru" if source.kind == "sequence" else "small-cnn")
    run_keys = ("resume", "skip_bad", "num_workers", "devices", "num_nodes", "progress")
    run = {k: settings.pop(k) for k in run_keys if k in settings}
    backbone = source_backbone(arch, source, image_size)
    config = FinetuneConfig(backbone=backbone, strategy="full", from_scratch=True, image_size=image_size,
                            **{"layer_decay": 1.0, "probe_epochs": 0, **settings})
    return finetune(source, config, output, split, **run)


def compare_source(source: Source, out_dir: str | Path | None = None, *, backbone: str | None = None,
                   strategies: tuple[str, ...] = ("head", "lp-ft"), epochs: int = 10, image_size: int | None = None,
                   seed: int = 0, test_size: float = 0.2, skip_bad: bool = False, progress: bool | None = None,
                   force: bool = False, **finetune_params) -> list[dict]:
    """Same split, same budget: training from scratch, the feature probe, and each fine-tuning strategy.

    Each run is saved under ``out_dir/<method>`` (default ``transfuse-models/<data>-compare-<time>``),
    a folder that must be new, empty or an earlier comparison (else ``force``); returns one row per
    method.
    """
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.finetune.strategy import parse_strategy

    backbone = backbone or default_backbone(source.kind)
    try:
        check_trainable(backbone)  # before the probe is trained, not after
    except DataError as exc:
        raise DataError(f"{exc}; so there is nothing to compare with the probe") from None
    runs = [("from scratch (full, random init)", "full", True)] + [(f"fine-tune {s}", s, False) for s in strategies]
    configs = [FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=scratch, epochs=epochs,
                              image_size=image_size, seed=seed, **finetune_params) for _, strategy, scratch in runs]
    for config in configs:  # every run can start, before the first one spends its time
        parse_strategy(config.strategy)
        config.check()
    out = OutputSpec(out_dir).path(source, "compare")
    if out.is_dir() and any(out.iterdir()) and not (out / "compare.json").is_file() and not force:
        raise DataError(f"--out {out} holds files that are not an earlier comparison; choose a new folder, or pass "
                        f"--force to replace its runs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text("[]\n")  # marks the folder as a comparison, so a rerun may replace its runs
    split = SplitSpec(test_size=test_size, seed=seed)
    rows = []
    start = time.perf_counter()
    weighted = {"class_weight": finetune_params["class_weight"]} if finetune_params.get("class_weight") else {}
    probe = fit(FitRequest(source=source, featurizer=FeaturizerSpec(backbone=backbone), split=split,
                           recipe=Recipe(head_params=weighted), output=OutputSpec(out / "probe", force=force),
                           skip_bad=skip_bad))
    rows.append({"method": "feature probe (logreg on features)", **metric_summary(probe.metrics),
                 "seconds": time.perf_counter() - start, "model_dir": str(out / "probe")})
    for (label, _, _), config in zip(runs, configs):
        metrics, folder = finetune(source, config, OutputSpec(out / config.run_name, force=force), split,
                                   skip_bad=skip_bad, progress=progress)
        rows.append({"method": label, **metric_summary(metrics), "seconds": metrics["train_seconds"],
                     "model_dir": str(folder)})
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    from transfuse.report import try_report

    try_report(out)
    return rows


def metric_summary(metrics: dict) -> dict:
    """Accuracy, balanced accuracy and macro-F1 of a metrics dict (those it has)."""
    return {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in metrics}


# -- evaluate and predict -------------------------------------------------------------------------------

def evaluate_dir(model_dir: str | Path, source: Source, skip_bad: bool = False, report_dir: str | Path | None = None,
                 **settings) -> dict:
    """Metrics of a saved model on every (readable, with ``skip_bad``) item of a labelled ``source``.

    When some items are ones the model was trained on (it records their digests), the metrics say
    how many (``overlap.seen``) and score the unseen ones separately (``overlap.unseen``): scores
    on training items are optimistic. ``report_dir``: also write the metrics, the predictions, what
    was evaluated (``evaluation.json``) and ``report.html`` there."""
    model = load_model(model_dir, **settings)
    reads = model_modality(model)
    if reads != source.kind:
        raise DataError(f"{model_dir} reads {reads} but the data is {source.kind}; evaluate it on {reads} data")
    classes = [str(c) for c in model_classes(model)]
    unknown = sorted(set(source.labels) - set(classes))
    if unknown:
        raise DataError(f"labels {unknown} are not classes of the model ({', '.join(classes)}); "
                        f"rename the folders or evaluate on matching data")
    ok, labels, proba = predict_arrays(model, source.items, on_error="skip" if skip_bad else "raise")
    truth = [lab for lab, good in zip(source.labels, ok) if good]
    predicted = [str(p) for p in labels]
    metrics = classification_metrics(truth, predicted, classes=classes)
    metrics["skipped"] = int((~ok).sum())
    readable = [item for item, good in zip(source.items, ok) if good]
    seen = trained_on(model_dir, readable, source.kind)
    if seen is not None:
        if seen.any():
            log.warning("%d of %d items were used to train %s: its scores on them are optimistic; the metrics of "
                        "the %d unseen items are under overlap.unseen", seen.sum(), len(seen), model_dir,
                        (~seen).sum())
            unseen = np.flatnonzero(~seen)
            metrics["overlap"] = {"seen": int(seen.sum()), "unseen": classification_metrics(
                [truth[i] for i in unseen], [predicted[i] for i in unseen], classes=classes) if len(unseen) else None}
    if report_dir is not None:
        _save_evaluation(Path(report_dir), Path(model_dir), source, metrics, readable, truth, predicted, proba, classes)
    return metrics


def _save_evaluation(out: Path, model_dir: Path, source: Source, metrics: dict, items: list, truth: list,
                     predicted: list, proba, classes: list[str]) -> None:
    """An evaluation's folder: metrics.json, predictions.csv, evaluation.json (the model's config and
    what it was scored on; no config.json, so the folder is never taken for a model) and the report."""
    from transfuse.evaluate import PREDICTIONS, write_predictions
    from transfuse.modeldir import METRICS, read_config
    from transfuse.report import try_report

    if is_model_dir(out):
        raise DataError(f"--report {out} is a model directory; choose another folder for the evaluation's report")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    write_predictions(out / PREDICTIONS, item_names(items, source.kind), truth, predicted, proba, classes)
    evaluation = {"model_dir": str(model_dir.resolve()), "model_config": read_config(model_dir),
                  "data": {"name": source.name, "kind": source.kind, "n_items": len(source),
                           "per_class": source.counts()}, "command": command_line()}
    atomic_write_text(out / "evaluation.json", json.dumps(evaluation, indent=2, default=str) + "\n")
    try_report(out)


def trained_on(model_dir: str | Path, items: list, kind: str) -> np.ndarray | None:
    """Which of ``items`` the model in ``model_dir`` was trained on (by the content digests it
    records); None for a model that records none."""
    digests = load_data(model_dir).get(TRAINING_ITEMS)
    if digests is None:
        return None
    return np.isin(np.asarray([digest_id(item, kind) for item in items], dtype=np.uint64), digests)


def predict_arrays(model, items: list[str], on_error: str = "raise") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(readable mask, labels of the readable items, their probabilities or None)`` for a probe
    pipeline or a fine-tuned model; unreadable files raise unless ``on_error="skip"``."""
    if isinstance(model, Pipeline):
        return pipeline_outputs(model, items, on_error)
    ok, proba = model.scores(items)
    if not ok.all() and on_error == "raise":
        raise CorruptInputError.unreadable([p for p, good in zip(items, ok) if not good], len(items), cached=False)
    return ok, model.classes_[proba.argmax(1)], proba if getattr(model, "has_proba", True) else None


def predict_paths(model, items: list[str], on_error: str = "raise") -> list[dict]:
    """One record per input: ``path`` (``text`` for a text model), ``label`` and per-class
    ``probabilities`` (when the model has them)."""
    key = "text" if model_modality(model) == "text" else "path"
    ok, labels, proba = predict_arrays(model, items, on_error)
    classes = model_classes(model)
    records: list[dict] = [{key: p, "label": None, "error": "unreadable"} for p in items]
    for j, i in enumerate(np.flatnonzero(ok)):
        rec = {key: items[i], "label": str(labels[j])}
        if proba is not None:
            rec["probabilities"] = {str(c): float(p) for c, p in zip(classes, proba[j])}
        records[i] = rec
    return records


__all__ = ["FeaturizerSpec", "FitRequest", "FitResult", "OutputSpec", "SplitSpec", "auto_layers", "compare_source",
           "default_out_dir", "evaluate_dir", "extract_source", "finetune", "fit", "fit_source", "predict_arrays",
           "predict_paths"]
