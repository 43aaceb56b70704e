"""Fine-tuning inside ``transfuse auto``: whether it fits the budget (a few real steps timed first), the
run itself under a hard time limit, and the choice between the probe, the fine-tuned network (with
or without test-time augmentation) and both averaged, on a validation hold-out of the training split
(the fine-tuning run's own: no model is trained on it, though the probe's cross-validation and the
run's choice of its best epoch have seen it; the test split is never read)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfuse.data.source import Source
from transfuse.finetune.config import FinetuneConfig
from transfuse.search import METRICS

log = logging.getLogger("transfuse.auto")
MIN_EPOCHS = 3  # one head-only epoch and two with the top of the network unfrozen
MAX_EPOCHS = 15


@dataclass
class Verdict:
    """What the validation hold-out chose: ``winner`` (probe, fine-tuned, fine-tuned + TTA, ensemble),
    every option's score, and why."""

    winner: str
    scores: dict[str, float]
    why: str


def plan_epochs(estimate, seconds: float) -> int:
    """Epochs to train in ``seconds`` (0 when fewer than :data:`MIN_EPOCHS` fit), at most :data:`MAX_EPOCHS`."""
    epochs = min(MAX_EPOCHS, estimate.epochs_within(seconds))
    return epochs if epochs >= MIN_EPOCHS else 0


def config_for(backbone: str, epochs: int, seed: int, class_weight: str | None) -> FinetuneConfig:
    """Linear probe, then the top of the network at decayed learning rates, with augmentation; a
    shorter probe phase when few epochs fit."""
    return FinetuneConfig(backbone=backbone, strategy="lp-ft", epochs=max(epochs, MIN_EPOCHS),
                          probe_epochs=1 if epochs < 8 else 2, patience=3, seed=seed, class_weight=class_weight,
                          augment=True)


def run_finetune(source: Source, config: FinetuneConfig, test_size: float, seed: int, beside: Path,
                 max_seconds: float | None, callbacks: tuple = ()) -> tuple[object, dict]:
    """Fine-tune in a scratch folder beside the output (removed afterwards); returns the fine-tuned
    model and its metrics on the test split (recorded, never used to choose). ``callbacks`` go to the
    trainer."""
    from transfuse.finetune.train import finetune_source
    from transfuse.pipeline import load_model

    beside.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".auto-finetune-", dir=beside))
    try:
        metrics = finetune_source(source, config, work / "run", test_size=test_size, split_seed=seed,
                                  progress=False, max_seconds=max_seconds, callbacks=callbacks)
        return load_model(work / "run"), metrics
    finally:
        shutil.rmtree(work, ignore_errors=True)


def score_of(metric: str, y: np.ndarray, proba: np.ndarray, classes: list[str]) -> float:
    """``metric`` of the predictions that probabilities (columns in ``classes`` order) make."""
    return float(METRICS[metric](y, np.asarray(classes)[proba.argmax(1)]))


def choose(y_val: np.ndarray, options: dict[str, np.ndarray], classes: list[str], metric: str,
           alpha: float = 0.1) -> Verdict:
    """Score each option's validation probabilities (columns in ``classes`` order) under ``metric``,
    and keep the probe unless another option is better under the metric *and* a one-sided sign test
    on the items where the two disagree (right for one, wrong for the other) rejects "no better" at
    ``alpha``. The fine-tuned network's best epoch was itself picked on these items, so its score
    here is optimistic; with a few dozen validation items only a clear win passes."""
    from scipy.stats import binomtest

    score = METRICS[metric]
    labels = {name: np.asarray(classes)[p.argmax(1)] for name, p in options.items()}
    scores = {name: float(score(y_val, predicted)) for name, predicted in labels.items()}
    right = {name: predicted == y_val for name, predicted in labels.items()}
    tests = {}
    for name in options:
        if name == "probe":
            continue
        wins = int((right[name] & ~right["probe"]).sum())
        losses = int((right["probe"] & ~right[name]).sum())
        p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
        tests[name] = (wins, losses, float(p))
    passed = [n for n, (_, _, p) in tests.items() if p < alpha and scores[n] > scores["probe"]]
    best = max(passed, key=lambda n: (scores[n], -tests[n][2])) if passed else "probe"
    what = metric.replace("_", " ")
    listed = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    head = f"on the {len(y_val)} validation items ({what}: {listed})"
    if best == "probe":
        rival = max(tests, key=lambda n: scores[n]) if tests else None
        why = f"{head} nothing beat the probe clearly" + (
            f" ({rival}: right on {tests[rival][0]} items the probe got wrong, wrong on {tests[rival][1]} it got "
            f"right; sign test p = {tests[rival][2]:.2f}, needs < {alpha})" if rival else "")
    else:
        wins, losses, p = tests[best]
        why = (f"{head} {best} beat the probe: right on {wins} items the probe got wrong, wrong on {losses} it got "
               f"right (sign test p = {p:.3f})")
    return Verdict(best, scores, why)
