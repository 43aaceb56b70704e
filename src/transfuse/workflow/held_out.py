"""What a trained pipeline gives on the test split, kept for the model folder and its report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

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
