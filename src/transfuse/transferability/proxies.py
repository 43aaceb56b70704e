"""Empirical proxies: what a cheap classifier actually achieves on the features. Published
comparisons find plain k-NN hard to beat as a transferability score, so these are scores like the
others.

- ``knn``: leave-one-out accuracy of the k nearest neighbours by cosine similarity (standardised
  features), majority vote with ties broken by the nearest.
- ``probe``: stratified cross-validated accuracy of standardise + logistic regression on a seeded
  subsample of at most ``max_items``.
"""

from __future__ import annotations

import numpy as np

from transfuse.transferability.base import Score, check_inputs


def knn(features, labels, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy.

    >>> knn([[0.0, 1], [0.1, 1], [0.2, 1], [1, 0.0], [1, 0.1], [1, 0.2]], [0, 0, 0, 1, 1, 1], k=1)
    1.0
    """
    X, y, n_classes = check_inputs(features, labels)
    Z = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(X) - 1))
    correct = 0
    for start in range(0, len(Z), 1024):  # blocks of rows: memory stays (1024, n)
        sims = Z[start:start + 1024] @ Z.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # leave the item itself out
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        votes = np.zeros((len(rows), n_classes))
        for rank in range(k):  # earlier neighbours weigh a hair more: ties go to the nearest
            votes[rows, y[nearest[:, rank]]] += 1 + (k - rank) * 1e-6
        correct += int((votes.argmax(axis=1) == y[start:start + len(rows)]).sum())
    return correct / len(Z)


def probe(features, labels, folds: int = 3, max_items: int = 2000, seed: int = 0) -> float:
    """Cross-validated logistic-probe accuracy on a seeded subsample."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = check_inputs(features, labels)
    if len(X) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(X), max_items, replace=False))
        X, y = X[keep], y[keep]
    folds = max(2, min(folds, int(np.bincount(y).min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, X, y, cv=cv).mean())


SCORES = (Score("knn", knn, description="leave-one-out k-NN accuracy (cosine, k=5)"),
          Score("probe", probe, description="cross-validated logistic probe accuracy on a subsample"))
