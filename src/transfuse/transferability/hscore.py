"""H-score (Bao et al., ICIP 2019): ``tr(cov(f)⁻¹ cov(E[f|y]))``, how much of the features' spread is
spread between the class means. With ``shrinkage`` (the regularised form of Ibrahim et al., ICLR
2023) ``cov(f)`` is replaced by its Ledoit-Wolf shrinkage towards a scaled identity, which keeps the
inverse stable when there are fewer items than dimensions.

Both are computed in the features' row space from one thin SVD ``X = U S Vᵀ`` of the centred
features: the class means lie in that space, so ``tr(Σ⁻¹ B) = Σᵢ |G vᵢ|²/n ÷ λᵢ`` over the
covariance's non-zero eigenvalues ``λᵢ`` (shrunk: ``(1-ρ) sᵢ²/n + ρ μ``), where ``G`` holds each
item's class mean. No d x d matrix is formed, so width costs little.
"""

from __future__ import annotations

import numpy as np

from transfuse.transferability.base import Score, check_inputs


def hscore(features, labels, shrinkage: bool = False) -> float:
    """H-score of ``features`` for ``labels`` (pseudo-inverse of the covariance without shrinkage).

    >>> hscore([[0.0], [0.1], [1.0], [1.1]], [0, 0, 1, 1]) > hscore([[0.0], [1.0], [0.1], [1.1]], [0, 0, 1, 1])
    True
    """
    X, y, k = check_inputs(features, labels)
    n = len(X)
    X = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    means = np.stack([X[y == c].mean(axis=0) for c in range(k)])
    projected = (means[y] @ vt.T) ** 2  # |G v_i|^2 per item and direction
    between = projected.sum(axis=0) / n
    eigen = s ** 2 / n
    if shrinkage:
        from sklearn.covariance import ledoit_wolf_shrinkage

        rho = float(ledoit_wolf_shrinkage(X, assume_centered=True))
        mu = float(eigen.sum() / X.shape[1])  # trace(cov) / d
        eigen = (1 - rho) * eigen + rho * mu
        return float((between / eigen).sum())
    keep = eigen > eigen.max() * 1e-10 if eigen.size and eigen.max() > 0 else np.zeros_like(eigen, dtype=bool)
    return float((between[keep] / eigen[keep]).sum())


def hscore_shrunk(features, labels) -> float:
    """:func:`hscore` with Ledoit-Wolf shrinkage of the feature covariance."""
    return hscore(features, labels, shrinkage=True)


SCORES = (Score("hscore", hscore, description="between-class over total feature covariance (pseudo-inverse)",
                reference="Bao et al., An information-theoretic approach to transferability, ICIP 2019"),
          Score("hscore_shrunk", hscore_shrunk, description="H-score with a Ledoit-Wolf shrunk covariance",
                reference="Ibrahim et al., Newer is not always better, ICLR 2023"))
