"""SFDA (Shao et al., "Not all models are equal", ECCV 2022): how well a regularised Fisher
discriminant, fitted on the features, classifies the same items after they were made harder.

1. Fisher stage: project on the directions that maximise between-class over within-class scatter,
   with the within scatter shrunk towards the identity, ``(1-λ) S_w + λ I`` and an adaptive
   ``λ = exp(-a · largest eigenvalue of S_w)``; class probabilities are the softmax of the linear
   discriminant (class means, shared covariance) in that space.
2. Self-challenge (ConfMix): each item moves towards the mean of the *other* classes' means by one
   minus its softened confidence in its own class (the published implementation softens the first
   stage's probabilities with one more softmax).
3. The score is the mean probability of the true class under a second Fisher stage fitted on the
   mixed items with the first stage's λ: in (0, 1], higher is better.

Everything happens in the row space of the centred features (``X = U S Vᵀ``): the scatter matrices
and the class means lie in it, and the regularised problem has no other non-zero solution, so the
result is exact with n < d and the eigenproblem is at most n x n.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh
from scipy.special import softmax

from transfuse.transferability.base import Score, check_inputs


def _fisher_probabilities(Z: np.ndarray, y: np.ndarray, k: int, a: float | None,
                          shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """Class probabilities per item of the regularised Fisher discriminant fitted on ``Z``, and the
    λ used. ``shrinkage`` fixes λ; otherwise ``exp(-a · σ_max(S_w))`` (``a=None``: λ = 0)."""
    n, d = Z.shape
    priors = np.bincount(y, minlength=k) / n
    means = np.stack([Z[y == c].mean(axis=0) for c in range(k)])
    centred = Z - means[y]
    within = centred.T @ centred / n  # Σ_c prior_c · cov_c
    total = np.cov(Z, rowvar=False, bias=True).reshape(d, d)
    between = total - within
    if shrinkage is None:
        shrinkage = 0.0 if a is None else float(np.exp(-a * np.linalg.eigvalsh(within)[-1]))
    regularised = (1 - shrinkage) * within + shrinkage * np.eye(d)
    regularised += np.eye(d) * 1e-10 * max(np.trace(regularised) / d, 1e-300)  # numerically positive definite
    values, vectors = eigh(between, regularised)
    W = vectors[:, np.argsort(values)[::-1][: max(1, min(k - 1, d))]]  # Wᵀ S W = I: a whitened space
    P, M = Z @ W, means @ W
    discriminant = P @ M.T - 0.5 * (M ** 2).sum(axis=1) + np.log(priors)
    return softmax(discriminant, axis=1), shrinkage


def _row_space(X: np.ndarray) -> np.ndarray:
    centred = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > s.max() * 1e-10 if s.size and s.max() > 0 else np.zeros_like(s, dtype=bool)
    return centred @ vt[keep].T if keep.any() else centred[:, :1] * 0


def sfda(features, labels, a: float | None = 5.0) -> float:
    """Self-challenging Fisher discriminant score (mean probability of the true class, in (0, 1]).
    ``a`` sets the adaptive shrinkage ``exp(-a · σ_max)`` of the within-class scatter (the paper's
    value, 5); ``a=None`` turns shrinkage off (plain Fisher discriminant, affine invariant).

    >>> y = [0, 0, 0, 1, 1, 1]
    >>> sfda([[0.0], [0.1], [0.2], [3.0], [3.1], [3.2]], y) > sfda([[0.0], [3.1], [0.2], [3.0], [0.1], [3.2]], y)
    True
    """
    X, y, k = check_inputs(features, labels)
    Z = _row_space(X)
    items = np.arange(len(y))
    first, shrinkage = _fisher_probabilities(Z, y, k, a)
    confidence = softmax(first, axis=1)[items, y][:, None]
    means = np.stack([Z[y == c].mean(axis=0) for c in range(k)])
    others = (means.sum(axis=0) - means) / (k - 1)  # each class's: the mean of the other classes' means
    mixed = confidence * Z + (1 - confidence) * others[y]
    return float(_fisher_probabilities(mixed, y, k, a, shrinkage)[0][items, y].mean())


SCORES = (Score("sfda", sfda, description="true-class probability of a regularised Fisher discriminant after "
                "a self-challenging mix", reference="Shao et al., Not all models are equal: predicting model "
                                                    "transferability in a self-challenging Fisher space, ECCV 2022"),)
