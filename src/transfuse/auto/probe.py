"""Probe trials for ``transfuse auto``: a featurizer configuration (backbone or backbones, layers,
pooling, engine) and a recipe (layers used, fusion, selection, head and its regularisation), scored
by stratified cross-validation on the training split only.

Features come through the feature cache (the ranking has already filled it for every tap of the
ranked backbones), and are kept in memory per configuration, so a trial costs one head fitted per
fold. Work stops being started once the stage's deadline would be passed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from transfuse.auto.budget import Budget
from transfuse.auto.trials import TrialLog
from transfuse.blocks import Blocks, from_slices
from transfuse.errors import DataError, OutOfTime
from transfuse.extract import deadline
from transfuse.recipe import Recipe
from transfuse.search import METRICS, search
from transfuse.workflow import FeaturizerSpec

log = logging.getLogger("transfuse.auto")
CHUNK = 6  # recipes scored between two looks at the clock


@dataclass(frozen=True)
class Trial:
    """One probe configuration: how items become features, and what is trained on them."""

    spec: FeaturizerSpec
    recipe: Recipe

    def label(self, modality: str) -> str:
        pooling = f"[{self.spec.pooling}]" if self.spec.pooling else ""
        return f"{self.spec.name(modality)}{pooling} | {self.recipe.label()}"

    def key(self) -> tuple:
        return (self.spec, repr(self.recipe.to_dict()))


class Prober:
    """Scores trials on ``items``/``labels`` (the training split) and remembers every score."""

    def __init__(self, items: list, labels: np.ndarray, modality: str, trials: TrialLog, budget: Budget,
                 metric: str = "accuracy", cv: int = 5, seed: int = 0) -> None:
        self.items, self.labels, self.modality = items, np.asarray(labels), modality
        self.trials, self.budget, self.metric, self.cv, self.seed = trials, budget, metric, cv, seed
        self.deadline = float("inf")  # seconds since the budget started after which no trial starts
        self.reserve_trials = 0  # trials kept for later stages (fine-tuning) under a trial budget
        self._features: dict[FeaturizerSpec, tuple[np.ndarray, Blocks, float]] = {}
        self.scored: dict[tuple, dict] = {}
        self.measured: dict[str, float] = {}  # backbone -> seconds of an extraction that was not all cache hits
        self.best: tuple[Trial, dict] | None = None

    # -- time ----------------------------------------------------------------------------------------
    def can_start(self, seconds: float = 0.0) -> bool:
        return self.budget.elapsed() + seconds <= self.deadline and \
            self.budget.trials_left() > self.reserve_trials

    # -- features ------------------------------------------------------------------------------------
    def features(self, spec: FeaturizerSpec, timed: bool = True) -> tuple[np.ndarray, Blocks, float]:
        """The training items' features under ``spec`` (from the cache where it has them), their
        blocks, and the seconds it took. With ``timed``, extraction stops at the stage's deadline (a
        DataError saying so; what was extracted stays cached)."""
        if spec not in self._features:
            self.trials.doing(f"features: {spec.name(self.modality)} {spec.pooling or ''}".strip())
            start = time.perf_counter()
            featurizer = spec.build(self.modality)
            left = self.deadline - self.budget.elapsed() if timed and self.deadline < float("inf") else None
            try:
                with deadline(None if left is None else time.monotonic() + max(left, 0.0)):
                    X = featurizer.fit_transform(self.items)
            except OutOfTime as exc:
                self.measured[spec.backbone] = max(self.measured.get(spec.backbone, 0.0),
                                                   time.perf_counter() - start)
                raise DataError(f"its features would pass the deadline ({exc})") from None
            seconds = time.perf_counter() - start
            if seconds > 1.0:
                self.measured[spec.backbone] = max(self.measured.get(spec.backbone, 0.0), seconds)
            self._features[spec] = (X, from_slices(featurizer.slices_), seconds)
        return self._features[spec]

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, spec: FeaturizerSpec, recipes: list[Recipe], stage: str, force: bool = False) -> list[dict]:
        """Cross-validate ``recipes`` on ``spec``'s features, a few at a time while the deadline allows
        (``force``: the first ones whatever the clock says); returns the rows of the trials scored now."""
        fresh = [r for r in recipes if Trial(spec, r).key() not in self.scored]
        if not fresh or not (force or self.can_start()):
            return []
        if spec.backbone is not None and _fitted(spec):
            return self._score_fitted(spec, fresh)
        try:
            X, blocks, _ = self.features(spec, timed=not force)
        except DataError as exc:  # an option this backbone does not take, or the deadline came first
            self.trials.note(f"{stage}: skipped, {spec.name(self.modality)} cannot run it ({exc})")
            return []
        rows, per_recipe, start = [], None, 0
        while start < len(fresh):
            size = 2 if per_recipe is None and self.deadline < float("inf") else CHUNK  # a first, cheap measure
            chunk = fresh[start:start + size]
            if self.budget.trials is not None and not force:
                chunk = chunk[: max(0, int(self.budget.trials_left()) - self.reserve_trials)]
            if not force and (not chunk or not self.can_start((per_recipe or 0.0) * len(chunk))):
                self.trials.note(f"{stage}: {len(fresh) - start} candidates left unscored (budget)")
                break
            force = False
            self.trials.doing(f"{stage}: {len(chunk)} candidates on {spec.name(self.modality)}")
            began = time.perf_counter()
            found = search(X, self.labels, blocks, chunk, cv=self.cv, seed=self.seed, metric=self.metric)
            per_recipe = (time.perf_counter() - began) / len(chunk)
            for row in sorted(found.rows, key=lambda r: r["order"]):
                rows.append(self._keep(Trial(spec, row["recipe"]), row["cv_score"], row["cv_std"],
                                       row["fit_seconds"] * self.cv))
            start += len(chunk)
        return rows

    def _score_fitted(self, spec: FeaturizerSpec, recipes: list[Recipe]) -> list[dict]:
        """A fitted featurizer (TF-IDF) learns from the items: it is fitted inside each fold too."""
        rows = []
        for recipe in recipes:
            if rows and not self.can_start():
                break
            self.trials.doing(f"{spec.backbone} | {recipe.label()}")
            began = time.perf_counter()
            scores = self._fitted_cv(Trial(spec, recipe), self.seed)
            rows.append(self._keep(Trial(spec, recipe), scores.mean(), scores.std(), time.perf_counter() - began))
        return rows

    def _fitted_cv(self, trial: Trial, seed: int) -> np.ndarray:
        smallest = int(np.unique(self.labels, return_counts=True)[1].min())
        folds = StratifiedKFold(n_splits=min(self.cv, smallest), shuffle=True, random_state=seed)
        model = Pipeline([("features", trial.spec.build(self.modality)), *trial.recipe.build({})])
        return cross_val_score(model, np.asarray(self.items, dtype=object), self.labels, cv=folds,
                               scoring=lambda est, X, y: METRICS[self.metric](y, est.predict(X)))

    def confirm(self, top: int = 5, repeats: int = 2) -> list[dict] | None:
        """The ``top`` trials scored again on ``repeats`` new sets of folds; the best mean over all
        its fold sets becomes the best trial (the highest of many noisy scores is optimistic, and
        fresh folds shrink that). Returns their rows, or None when the deadline came first."""
        ranked = sorted(self.scored.items(), key=lambda kv: -kv[1]["cv_score"])[:top]
        if len(ranked) < 2:
            return None
        out = []
        for key, row in ranked:
            if not self.can_start(row["seconds"] * repeats):
                self.trials.note(f"confirmed {len(out)} of the top {len(ranked)} on new folds before the deadline")
                break
            trial = Trial(key[0], _recipe(row))
            self.trials.doing(f"new folds: {row['candidate']}")
            scores = [row["cv_score"]]
            for r in range(1, repeats + 1):
                if _fitted(trial.spec):
                    scores.append(float(self._fitted_cv(trial, self.seed + r).mean()))
                else:
                    X, blocks, _ = self.features(trial.spec)
                    found = search(X, self.labels, blocks, [trial.recipe], cv=self.cv, seed=self.seed + r,
                                   metric=self.metric)
                    scores.append(found.rows[0]["cv_score"])
            row["confirmed"] = round(float(np.mean(scores)), 4)
            out.append((trial, row))
        if not out:
            return None
        self.best = max(out, key=lambda tr: tr[1]["confirmed"])
        return [row for _, row in out]

    def _keep(self, trial: Trial, score: float, std: float, seconds: float) -> dict:
        row = self.trials.record(trial.label(self.modality), score, std, seconds,
                                 featurizer=_spec_dict(trial.spec), recipe=trial.recipe.to_dict())
        self.scored[trial.key()] = row
        if self.best is None or row["cv_score"] > self.best[1]["cv_score"]:
            self.best = (trial, row)
        return row

    def best_of(self, backbone: str) -> tuple[Trial, dict] | None:
        """The best trial so far whose featurizer is ``backbone`` alone."""
        found = None
        for key, row in self.scored.items():
            spec = key[0]
            if spec.backbone == backbone and (found is None or row["cv_score"] > found[1]["cv_score"]):
                found = (Trial(spec, _recipe(row)), row)
        return found


def _recipe(row: dict) -> Recipe:
    return Recipe.from_dict(row["recipe"])


def _fitted(spec: FeaturizerSpec) -> bool:
    from transfuse.featurizers import fitted_featurizers

    return spec.backbone in fitted_featurizers()


def _spec_dict(spec: FeaturizerSpec) -> dict:
    keep = ("backbone", "layers", "pooling", "runtime", "precision")
    return {k: getattr(spec, k) for k in keep if getattr(spec, k) not in (None, "auto")}


# -- the search space, stage by stage -------------------------------------------------------------

POOLING_VARIANTS = {"image": ("max", "gem", "avgmax"), "text": ("max", "avgmax", "cls"), "audio": ("avg", "max")}


def head_variants(recipe: Recipe, class_weight: str | None, metric: str) -> list[Recipe]:
    """The head and its regularisation around ``recipe``: logistic regression at four strengths, a
    linear SVM at three, ridge and a small MLP; with a metric other than accuracy and no class
    weight given, each also with ``class_weight="balanced"``."""
    grid = [("logreg", {"C": c}) for c in (0.01, 0.1, 1.0, 10.0)] + [("svm", {"C": c}) for c in (0.01, 0.1, 1.0)] + \
        [("ridge", {}), ("mlp", {})]
    weights = [{"class_weight": class_weight}] if class_weight else \
        ([{}, {"class_weight": "balanced"}] if metric != "accuracy" else [{}])
    return [dataclasses.replace(recipe, head=head, head_params={**params, **w}) for head, params in grid for w in weights]


def with_pooling(spec: FeaturizerSpec, pooling: str) -> FeaturizerSpec:
    return dataclasses.replace(spec, pooling=pooling)
