"""``transfuse auto``: from labelled data to the best model found within a budget.

Stages, on the training split only (the test split is read once, by the model that is kept):
1. rank the sources available for the data's kind, keep the top few backbones;
2. plan fine-tuning: time a few real training steps of the best trainable backbone and decide
   whether enough epochs fit in what the budget leaves; if so, the probe stages get a share;
3. probe: the plain ``fit`` configuration (the fallback: what ``auto`` must never be worse than),
   then for each kept backbone its layers, fused or alone, selection and regularisation; pooling
   variants of the best; the two best backbones fused; heads and their regularisation; all scored
   by cross-validation;
4. fine-tune the planned backbone under a hard time limit, then compare the probe, the fine-tuned
   network (and with test-time augmentation) and both averaged on a validation hold-out;
5. keep the winner, score it on the test split, save it like any model with the decision path in
   ``metrics.json`` (``auto``) and every trial in ``auto.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.auto.budget import Budget, parse_budget
from transfuse.auto.probe import POOLING_VARIANTS, Prober, Trial, head_variants, with_pooling
from transfuse.auto.trials import TrialLog
from transfuse.auto.tune import choose, config_for, plan_epochs, run_finetune, score_of
from transfuse.backbones import default_backbone
from transfuse.data.fingerprint import digest_ids
from transfuse.data.source import Source
from transfuse.errors import DataError
from transfuse.evaluate import PREDICTIONS, classification_metrics, item_names, plot_confusion, write_predictions
from transfuse.featurizers import check_trainable, fitted_featurizers
from transfuse.modeldir import TRAINING_ITEMS, check_destination
from transfuse.pipeline import save_model
from transfuse.recipe import Recipe
from transfuse.report import try_report
from transfuse.search import check_metric, default_recipes
from transfuse.taps import parse_layers
from transfuse.workflow import (
    AUTO_SCORES,
    FeaturizerSpec,
    FitRequest,
    OutputSpec,
    SplitSpec,
    auto_layers,
    command_line,
    fit,
    metric_summary,
    predict_arrays,
)

log = logging.getLogger("transfuse.auto")
RANK_ITEMS = 1000  # under a time budget, the ranking reads at most this many training items


@dataclass(frozen=True)
class AutoRequest:
    """One ``auto`` run: the data, the budget (``"15m"``, ``"40 trials"``, seconds or a
    :class:`Budget`), the split, where the model goes, the objective (``metric``), an optional class
    weight for every head and loss, whether fine-tuning may run (None: when it fits the budget),
    how many ranked backbones are probed, and run-time extraction settings (batch_size,
    num_workers, device, cache)."""

    source: Source
    budget: str | float | Budget = "10m"
    split: SplitSpec = field(default_factory=SplitSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    metric: str = "accuracy"
    class_weight: str | None = None
    finetune: bool | None = None
    cv: int = 5
    backbones: int = 2
    engine: dict = field(default_factory=dict)
    progress: bool | None = None


@dataclass
class AutoResult:
    """The kept model, its test metrics (with the decision path under ``auto``), where it was saved,
    and every trial."""

    model: object
    metrics: dict
    out_dir: Path | None
    trials: list[dict]
    n_train: int
    n_test: int


def run_auto(request: AutoRequest) -> AutoResult:
    """Find and save the best model for ``request.source`` within its budget (see the module docstring).

    >>> res = run_auto(AutoRequest(load_source("examples/fashion"), budget="5m"))  # doctest: +SKIP
    >>> res.metrics["auto"]["winner"]["why"]  # doctest: +SKIP
    """
    budget = parse_budget(request.budget).restart()
    check_metric(request.metric)
    if request.class_weight not in (None, "balanced"):
        raise DataError(f"--class-weight must be 'balanced' or left out, got {request.class_weight!r}")
    if request.backbones < 1:
        raise DataError(f"keep at least one ranked backbone, got {request.backbones}")
    source = request.source
    train, test = request.split.indices(source)  # bad splits fail before any work
    out = request.output.path(source, "auto")
    if request.output.save:
        check_destination(out, force=request.output.force)
    items, y = [source.items[i] for i in train], np.asarray(source.labels)[train]
    trials = TrialLog(budget, request.metric, request.progress)
    try:
        run = _Run(request, budget, trials, items, y, len(test), out)
        smallest = int(np.unique(y, return_counts=True)[1].min())
        if smallest < 2:  # nothing to cross-validate: the plain fit configuration, as `fit` would train it
            run.too_few(smallest)
        else:
            run.rank()
            run.plan_finetune()
            run.probe()
        return run.finish(train, test)
    finally:
        trials.close()


class _Run:
    """The state of one ``auto`` run between its stages."""

    def __init__(self, request: AutoRequest, budget: Budget, trials: TrialLog, items: list, y: np.ndarray,
                 n_test: int, out: Path) -> None:
        self.request, self.budget, self.trials, self.items, self.y = request, budget, trials, items, y
        self.out = out  # the fine-tuning run's scratch folder goes beside it
        self.kind, self.n_test = request.source.kind, n_test
        weight = {"class_weight": request.class_weight} if request.class_weight else {}
        self.weight = weight
        self.prober = Prober(items, y, self.kind, trials, budget, request.metric, request.cv, request.split.seed)
        self.top: list[str] = []
        self.engines: dict[str, tuple[str, str]] = {}
        self.extract_seconds: dict[str, float] = {}
        self.ranking: list[dict] = []
        self.plan = None  # (config, estimate) of the fine-tuning to run

    def too_few(self, smallest: int) -> None:
        with self.trials.stage("plain fit (the fallback)"):
            trial = Trial(self.spec(default_backbone(self.kind)), Recipe(head_params=dict(self.weight)))
            row = {"stage": "plain fit (the fallback)", "candidate": trial.label(self.kind), "cv_score": None,
                   "cv_std": None, "seconds": 0.0, "at": round(self.budget.elapsed(), 1)}
            self.prober.best = (trial, row)
            self.trials.note(f"the smallest class has {smallest} training item: too few to cross-validate or "
                             f"to hold items out, so the plain fit configuration is trained as it is")

    def cost(self, backbone: str) -> float:
        """Seconds one extraction of the training items by ``backbone`` took (the ranking's, or one measured since)."""
        return max(self.extract_seconds.get(backbone, 0.0), self.prober.measured.get(backbone, 0.0))

    # -- 1. rank ---------------------------------------------------------------------------------
    def rank(self) -> None:
        from transfuse.engines.planner import RUNTIMES
        from transfuse.ranking import default_candidates, rank

        with self.trials.stage("rank sources"):
            names = default_candidates(self.kind)
            share = None if self.budget.seconds is None else 0.3 * self.budget.seconds
            part = self.ranking_sample()
            self.trials.doing(f"ranking {len(names)} sources" + (
                f" on {len(part)} of the {len(self.y)} training items" if len(part) < len(self.y) else ""))
            rows = rank([self.items[i] for i in part], list(self.y[part]), names, score=AUTO_SCORES, resamples=0,
                        seed=self.request.split.seed, budget=share, fuse_top=False, **self.request.engine)
            self.ranking = [{k: r[k] for k in ("backbone", "layer", "dim", "scores", "rank")} for r in rows]
            scale = len(self.y) / len(part)  # what extracting every training item will cost
            for r in rows:
                self.extract_seconds[r["backbone"]] = self.extract_seconds.get(r["backbone"], 0.0) + scale * r["seconds"]
                engine = (r.get("engine") or "").split()
                if engine and engine[0] in RUNTIMES:
                    self.engines[r["backbone"]] = (engine[0], engine[1])
            ranked = list(dict.fromkeys(r["backbone"] for r in rows))
            self.top = ranked[: self.request.backbones]
            skipped = sorted(set(names) - set(ranked))
            self.trials.note(f"ranked {len(rows)} candidates of {len(ranked)} sources by {AUTO_SCORES}; kept "
                             f"{', '.join(self.top)}" + (f"; not ranked in time: {', '.join(skipped)}" if skipped else ""))

    def ranking_sample(self) -> np.ndarray:
        """The training items the ranking reads: all of them, or under a time budget on large data a
        stratified sample of :data:`RANK_ITEMS` (transferability scores order the sources as well from
        a thousand items, and the time goes to probing the kept ones on every item)."""
        every = np.arange(len(self.y))
        if self.budget.seconds is None or len(self.y) <= RANK_ITEMS or 2 * len(np.unique(self.y)) > RANK_ITEMS:
            return every
        from sklearn.model_selection import train_test_split

        part = train_test_split(every, train_size=RANK_ITEMS, stratify=self.y, random_state=self.request.split.seed)[0]
        self.trials.note(f"ranking on a stratified {RANK_ITEMS} of the {len(self.y)} training items (the budget "
                         f"is better spent probing the kept sources on all of them)")
        return np.sort(part)

    def spec(self, backbone: str, layers=None, pooling: str | None = None) -> FeaturizerSpec:
        """How ``backbone`` is read: the ranking's engine kept, so its cached features are used as they are."""
        runtime, precision = self.engines.get(backbone, ("auto", "auto")) if "," not in backbone else \
            _shared_engine([self.engines.get(b) for b in backbone.split(",")])
        settings = {k: v for k, v in self.request.engine.items() if k in ("batch_size", "num_workers", "device", "cache")}
        layers = ",".join(layers) if isinstance(layers, (list, tuple)) else layers  # specs are compared and hashed
        return FeaturizerSpec(backbone=backbone, layers=layers, pooling=pooling, runtime=runtime, precision=precision,
                              **settings)

    # -- 2. plan fine-tuning -----------------------------------------------------------------------
    def plan_finetune(self) -> None:
        from transfuse.finetune.estimate import estimate_epoch
        from transfuse.finetune.train import validation_split

        if self.request.finetune is False:
            return
        trainable, reason = [], ""
        for name in self.top:
            try:
                check_trainable(name)
                trainable.append(name)
            except DataError as exc:
                reason = str(exc).split(";")[0]
        with self.trials.stage("plan fine-tuning"):
            if not trainable:
                self.trials.note(f"no fine-tuning: {reason}")
                return
            backbone = trainable[0]
            config = config_for(backbone, 10, self.request.split.seed, self.request.class_weight)
            if self.budget.trials is not None:
                self.prober.reserve_trials = 1  # the fine-tuning run is a trial too
            y_idx = np.unique(self.y, return_inverse=True)[1]
            fit_idx, val_idx = validation_split(np.arange(len(self.y)), y_idx, config.val_fraction, config.seed)
            self.trials.doing(f"timing a few training steps of {backbone}")
            estimate = estimate_epoch(self.items, list(self.y), config, len(fit_idx), len(val_idx),
                                      within=None if self.budget.seconds is None else self.budget.left())
            reserve = self.final_reserve(estimate)
            if self.budget.seconds is None:  # a trial budget: the run is one trial, at the usual length
                self.plan = (config, estimate)
                self.trials.note(f"fine-tuning {backbone} planned for {config.epochs} epochs (about "
                                 f"{estimate.epoch:.0f}s each here)")
                return
            left = self.budget.left() - reserve
            probe_share = max(0.35 * left, 30.0)
            epochs = plan_epochs(estimate, left - probe_share)
            needs = estimate.setup + 3 * estimate.epoch
            if not epochs:
                self.prober.reserve_trials = 0
                self.trials.note(f"no fine-tuning: {backbone} needs about {needs:.0f}s for 3 epochs here "
                                 f"({estimate.epoch:.0f}s each), and the budget leaves {max(0, left - probe_share):.0f}s "
                                 f"after the probe trials")
                return
            self.plan = (config_for(backbone, epochs, self.request.split.seed, self.request.class_weight), estimate)
            self.prober.deadline = self.budget.elapsed() + probe_share
            self.trials.note(f"fine-tuning {backbone} fits: about {estimate.epoch:.0f}s per epoch here, {epochs} "
                             f"epochs planned after {probe_share:.0f}s of probe trials")

    def final_reserve(self, estimate=None) -> float:
        """Seconds to keep for the end: the test items' features for the kept backbones, the
        fine-tuned network's predictions (in the run and in the choice; images twice, for test-time
        augmentation), saving."""
        n = max(len(self.y), 1)
        best = self.prober.best
        kept = best[0].spec.backbone.split(",") if best is not None and best[0].spec.backbone else self.top
        extract = sum(self.cost(b) for b in kept) * self.n_test / n
        # its head trained on every training item: a cross-validation fold's fit on a larger share
        head = 0.0 if best is None or not best[1].get("seconds") else 1.5 * best[1]["seconds"] / self.request.cv
        passes = 2 if self.kind == "image" else 1  # test-time augmentation adds the mirrored images
        predict = 0.0 if estimate is None else \
            2 * passes * estimate.eval_batch * math.ceil((self.n_test + estimate.n_val) / estimate.batch_size)
        return 1.2 * (extract + predict + head) + 5.0

    # -- 3. probe ----------------------------------------------------------------------------------
    def probe(self) -> None:
        prober = self.prober
        with self.probe_stage("plain fit (the fallback)"):
            base = self.spec(default_backbone(self.kind))
            prober.score(base, [Recipe(head_params=dict(self.weight))], "plain fit", force=True)
        with self.probe_stage("layers and fusion per backbone"):
            for name in self.top:
                if name in fitted_featurizers():
                    prober.score(self.spec(name), [Recipe(head_params={"C": c, **self.weight}) for c in (1.0, 10.0)],
                                 name)
                    continue
                spec = self.spec(name, layers=auto_layers(name))
                if not prober.can_start():
                    break
                try:
                    _, blocks, _ = prober.features(spec)
                except DataError as exc:
                    self.trials.note(f"{name} not probed: {exc}")
                    continue
                prober.score(spec, default_recipes(blocks, "logreg", head_params=dict(self.weight)), name)
        with self.probe_stage("more sources"):
            self.more_sources()
        with self.probe_stage("pooling"):
            self.try_poolings()
        with self.probe_stage("the two best backbones fused"):
            self.try_pair()
        with self.probe_stage("head and regularisation"):
            if prober.best is not None:
                trial = prober.best[0]
                fitted = trial.spec.backbone in fitted_featurizers()
                recipes = [r for r in head_variants(trial.recipe, self.request.class_weight, self.request.metric)
                           if not fitted or r.head in ("logreg", "svm", "ridge")]
                prober.score(trial.spec, recipes, "heads")
        with self.probe_stage("confirm the best on new folds"):
            confirmed = prober.confirm()
            if confirmed:
                trial, row = prober.best
                self.trials.note(f"{row['candidate']}: {row['confirmed']:.3f} over 3 sets of folds, the best of the "
                                 f"top {len(confirmed)}")
        if prober.best is None:
            raise DataError(f"the budget ({self.budget.describe()}) ended before a single candidate was scored; "
                            f"give a larger --budget")

    @contextlib.contextmanager
    def probe_stage(self, name: str):
        """One probe stage. Without fine-tuning planned, its trials may start until the end's reserve,
        which grows with what the best trial so far will cost to train and apply (so the deadline is
        recomputed as each stage begins)."""
        with self.trials.stage(name):
            if self.budget.seconds is not None and self.plan is None:
                self.prober.deadline = max(0.0, self.budget.seconds - self.final_reserve())
            yield

    def more_sources(self) -> None:
        """The next ranked backbones' layers, while the deadline leaves time for their features."""
        ranked = [r["backbone"] for r in self.ranking]
        rest = [b for b in dict.fromkeys(ranked) if b not in self.top and "," not in b and b not in fitted_featurizers()]
        for name in rest:
            if not self.prober.can_start(self.cost(name) + 5.0):
                self.trials.note(f"{len(rest) - rest.index(name)} more ranked sources not probed (budget)")
                return
            spec = self.spec(name, layers=auto_layers(name))
            try:
                _, blocks, _ = self.prober.features(spec)
            except DataError as exc:
                self.trials.note(f"{name} not probed: {exc}")
                continue
            self.prober.score(spec, default_recipes(blocks, "logreg", head_params=dict(self.weight)), name)
            self.top.append(name)

    def try_poolings(self) -> None:
        best = self._best_extractor()
        if best is None:
            return
        trial, _ = best
        name = trial.spec.backbone
        X0 = self.prober.features(trial.spec)[0]
        for pooling in POOLING_VARIANTS.get(self.kind, ()):
            if pooling == trial.spec.pooling:
                continue
            if not self.prober.can_start(self.cost(name)):
                self.trials.note(f"pooling {pooling} not tried: its extraction would pass the deadline")
                break
            spec = with_pooling(trial.spec, pooling)
            try:
                X = self.prober.features(spec)[0]
            except DataError as exc:  # a frozen encoder that returns one vector per item, or the deadline
                self.trials.note(f"pooling {pooling} of {name} stopped: {exc}" if "deadline" in str(exc) else
                                 f"no pooling variants for {name}: {exc}")
                break
            if X.shape == X0.shape and np.allclose(X, X0):
                self.trials.note(f"{name}'s taps are already vectors: pooling changes nothing")
                break
            self.prober.score(spec, [trial.recipe], f"pooling {pooling}")

    def try_pair(self) -> None:
        probed = [(b, self.prober.best_of(b)) for b in self.top if b not in fitted_featurizers()]
        extractors = [b for b, found in sorted([p for p in probed if p[1] is not None],
                                               key=lambda p: -p[1][1]["cv_score"])]
        if len(extractors) < 2:
            self.trials.note("fewer than two backbones probed: nothing to fuse")
            return
        layers = []
        for name in extractors[:2]:
            found = self.prober.best_of(name)
            if found is None:
                return
            trial = found[0]
            taps = list(trial.recipe.layers) if trial.recipe.layers else parse_layers(trial.spec.layers) or ["features"]
            layers += [f"{name}:{tap}" for tap in taps]
        if not self.prober.can_start(0.2 * sum(self.cost(b) for b in extractors[:2])):
            self.trials.note("the fused pair not tried: its features would pass the deadline")
            return
        spec = self.spec(",".join(extractors[:2]), layers=layers)
        cs = [{"C": c, **self.weight} for c in (0.1, 1.0)]
        recipes = [Recipe(fusion="concat", head_params=c) for c in cs] + \
            [Recipe(fusion="concat", select="pca:0.95", head_params=cs[1]), Recipe(fusion="weighted", head_params=cs[1])]
        self.prober.score(spec, recipes, "fused pair")

    def _best_extractor(self) -> tuple[Trial, dict] | None:
        """The best trial on one pretrained backbone (pooling applies to it)."""
        rows = [found for found in (self.prober.best_of(b) for b in self.top if b not in fitted_featurizers())
                if found is not None]
        return max(rows, key=lambda tr: tr[1]["cv_score"]) if rows else None

    # -- 4 and 5. fine-tune, choose, save -----------------------------------------------------------
    def finish(self, train: list[int], test: list[int]) -> AutoResult:
        request, source = self.request, self.request.source
        trial, row = self.prober.best
        with self.trials.stage("train the best probe"):
            self.trials.doing(f"training {trial.label(self.kind)} on the training split")
            probe = fit(FitRequest(source=source, featurizer=trial.spec, recipe=trial.recipe, split=request.split,
                                   output=OutputSpec(save=False)))
        baseline = next((r for r in self.trials.trials if r["stage"] == "plain fit (the fallback)"), None)
        if row["cv_score"] is None:
            why = f"{row['candidate']}: too few training items per class to compare anything"
        else:
            why = (f"{row['candidate']} had the best cross-validated {request.metric.replace('_', ' ')} "
                   f"({row['cv_score']:.3f} ± {row['cv_std']:.3f}) of {len(self.prober.scored)} probe trials"
                   + (f", {row['confirmed']:.3f} over three sets of folds" if "confirmed" in row else ""))
        if baseline is not None and baseline is not row:
            why += f"; {row['cv_score'] - baseline['cv_score']:+.3f} over the plain fit configuration"
        model, metrics, winner = probe.model, dict(probe.metrics), "probe"
        metrics.pop("seconds", None)  # the final refit's alone; the run's are in metrics["auto"]
        verdict, tuned, scored = None, None, None
        if self.plan is not None:
            try:
                verdict, tuned = self.finetune_and_choose(probe.model, train, test)
            except Exception as exc:  # noqa: BLE001  (a failed fine-tune must not lose the probe found)
                log.warning("fine-tuning failed (%s: %s); keeping the probe", type(exc).__name__, str(exc)[:200])
                self.trials.note(f"fine-tuning failed ({type(exc).__name__}); the probe is kept")
                verdict, tuned = None, None
        if verdict is not None and verdict.winner != "probe":
            ft_model, ft_metrics = tuned
            winner = verdict.winner
            why = f"{verdict.why}; the probe was {why}"
            if winner == "ensemble":
                from transfuse.ensemble import EnsembleModel

                model = EnsembleModel([probe.model, ft_model], labels=["probe", "fine-tuned"])
            else:
                model = ft_model
            with self.trials.stage("score the winner"):
                test_items = [source.items[i] for i in test]
                _, labels, proba = predict_arrays(model, test_items)
                predicted = [str(p) for p in labels]
                scored = (test_items, predicted, proba)  # saved as predictions.csv: predicted once
                metrics = classification_metrics([str(source.labels[i]) for i in test], predicted,
                                                 classes=[str(c) for c in model.classes_])
                metrics["split"] = ft_metrics["split"] if winner != "ensemble" else probe.metrics["split"]
                metrics["probe"] = metric_summary(probe.metrics)
        elif verdict is not None:
            why = f"{why}; {verdict.why}"
        decision = {"winner": {"kind": winner, "candidate": row["candidate"] if winner == "probe" else winner,
                               "why": why},
                    "budget": self.budget.to_dict(), "metric": request.metric, "stages": self.trials.stages,
                    "baseline": baseline and {k: baseline[k] for k in ("candidate", "cv_score", "cv_std")},
                    "validation": verdict.scores if verdict else None,
                    "fine_tuned": tuned and {**metric_summary(tuned[1]), "epochs_run": tuned[1].get("epochs_run"),
                                             "train_seconds": round(tuned[1].get("train_seconds", 0.0), 1),
                                             "val_acc_per_epoch": tuned[1].get("curve"),
                                             "stopped": tuned[1].get("stopped")},
                    "sources": {"kept": self.top, "ranking": self.ranking[:10]}}
        metrics["auto"] = decision
        log.info("kept the %s: %s", winner, why)
        saved = None
        if request.output.save:
            saved = self.save(model, metrics, self.out, train, test, probe.held_out if winner == "probe" else None,
                              scored)
        return AutoResult(model=model, metrics=metrics, out_dir=saved, trials=self.trials.trials,
                          n_train=len(train), n_test=len(test))

    def finetune_and_choose(self, probe_model: Pipeline, train: list[int], test: list[int]):
        from transfuse.finetune.callbacks import CannotCatchUp
        from transfuse.finetune.train import validation_split

        request, source = self.request, self.request.source
        config, estimate = self.plan
        y_all = np.array([source.classes.index(lab) for lab in source.labels])
        fit_idx, val_idx = validation_split(np.asarray(train), y_all, config.val_fraction, config.seed)
        classes = list(map(str, source.classes))  # the fine-tuned network's columns
        y_val = np.asarray(source.labels)[val_idx].astype(str)
        probe_val, has_proba = self.probe_on_validation(train, fit_idx, val_idx, classes)
        with self.trials.stage("fine-tune") as stage:
            seconds = None
            if self.budget.trials_left() < 1:
                self.trials.note("no fine-tuning: no trial left in the budget")
                return None, None
            if self.budget.seconds is not None:
                seconds = self.budget.left() - self.final_reserve(estimate)
                epochs = plan_epochs(estimate, seconds)
                if not epochs:
                    self.trials.note(f"no fine-tuning: {seconds:.0f}s left, fewer than 3 epochs of {config.backbone}")
                    return None, None
                config = config_for(config.backbone, epochs, config.seed, config.class_weight)
                seconds -= estimate.setup  # building the network is not in Lightning's clock
            # the learning curve against the probe: a run that cannot reach the probe's accuracy on
            # the validation items by its last epoch is stopped, and its time is not spent (the run's
            # curve is accuracy: with another objective the choice below decides alone)
            target = float(np.mean(np.asarray(classes)[probe_val.argmax(1)] == y_val))
            curve = CannotCatchUp(target, after=config.probe_epochs + 2)
            checks = (curve,) if request.metric == "accuracy" else ()
            self.trials.doing(f"fine-tuning {config.backbone} ({config.epochs} epochs, lp-ft; the probe has "
                              f"{target:.3f} accuracy on the validation items)")
            began = time.perf_counter()
            ft_model, ft_metrics = run_finetune(source, config, request.split.test_size, request.split.seed,
                                                self.out.parent, seconds, callbacks=checks)
            self.budget.spend()
            stage["extra"] = 1
            ft_metrics["curve"] = [round(a, 4) for a in curve.curve] if checks else None
            self.trials.note(f"fine-tuned {config.backbone}: {ft_metrics['epochs_run']} epochs in "
                             f"{time.perf_counter() - began:.0f}s"
                             + (f"; stopped early, {curve.stopped}" if curve.stopped else ""))
            if curve.stopped:
                ft_metrics["stopped"] = curve.stopped
        with self.trials.stage("choose on validation"):
            val_items = [source.items[i] for i in val_idx]
            options = {"probe": probe_val, "fine-tuned": ft_model.predict_proba(val_items)}
            if ft_model.modality == "image":
                ft_model.tta = True
                options["fine-tuned + TTA"] = ft_model.predict_proba(val_items)
                ft_model.tta = False
            tuned = max((k for k in options if k != "probe"),
                        key=lambda k: score_of(request.metric, y_val, options[k], classes))
            if has_proba:  # scores alone (svm, ridge) are not probabilities to average
                options["ensemble"] = (probe_val + options[tuned]) / 2
            verdict = choose(y_val, options, classes, request.metric)
            if verdict.winner in ("fine-tuned + TTA",) or (verdict.winner == "ensemble" and tuned != "fine-tuned"):
                ft_model.tta = True
            self.trials.note(verdict.why)
        return verdict, (ft_model, ft_metrics)

    def probe_on_validation(self, train: list[int], fit_idx: np.ndarray, val_idx: np.ndarray,
                            classes: list[str]) -> tuple[np.ndarray, bool]:
        """The chosen probe trained on the training split minus the validation items: its
        probabilities on them (columns in ``classes`` order; its predictions one-hot when the head
        gives scores only), and whether they are probabilities."""
        trial = self.prober.best[0]
        position = {item: k for k, item in enumerate(train)}
        fit_pos, val_pos = [position[i] for i in fit_idx], [position[i] for i in val_idx]
        if trial.spec.backbone in fitted_featurizers():
            X = np.asarray(self.items, dtype=object)
            model = Pipeline([("features", trial.spec.build(self.kind)), *trial.recipe.build({})])
        else:
            X, blocks, _ = self.prober.features(trial.spec)
            model = Pipeline(trial.recipe.build(blocks))
        model.fit(X[fit_pos], self.y[fit_pos])
        if not hasattr(model, "predict_proba"):
            predicted = np.asarray(model.predict(X[val_pos])).astype(str)
            return (predicted[:, None] == np.asarray(classes)[None]).astype(float), False
        proba = model.predict_proba(X[val_pos])
        order = [list(map(str, model.classes_)).index(c) for c in classes]
        return proba[:, order], True

    def save(self, model, metrics: dict, out: Path, train: list[int], test: list[int], held_out, scored) -> Path:
        """The kept model with its decision path, the test split's predictions (the probe's
        ``held_out``, with its feature map, when it won; else the winner's ``scored`` items, labels and
        probabilities) and the report."""
        source = self.request.source
        title = f"auto: {metrics['auto']['winner']['candidate']}"
        record = {**metrics["auto"], "trials": self.trials.trials}
        files = {"confusion_matrix.png": lambda path: plot_confusion(metrics, path, title=title),
                 "auto.json": lambda path: path.write_text(json.dumps(record, indent=2, default=str) + "\n")}
        if held_out is not None:
            files.update(held_out.files())
        else:
            items, predicted, proba = scored
            truth, classes = [str(source.labels[i]) for i in test], [str(c) for c in model.classes_]
            files[PREDICTIONS] = lambda path: write_predictions(path, item_names(items, source.kind), truth,
                                                                predicted, proba, classes)
        seen = digest_ids([source.items[i] for i in train], source.kind)
        saved = save_model(model, out, metrics=metrics, force=self.request.output.force, data={TRAINING_ITEMS: seen},
                           extra={"data": {"name": source.name, "kind": source.kind, "n_items": len(source),
                                           "per_class": source.counts()}, "command": command_line()},
                           files=files)
        try_report(saved)
        return saved


def _shared_engine(engines: list) -> tuple[str, str]:
    """One engine for several backbones: theirs when they agree, else ``auto``."""
    return engines[0] if engines and all(e == engines[0] and e is not None for e in engines) else ("auto", "auto")

