"""TransRate (Huang et al., ICML 2022): the coding rate of all features minus the mean coding rate
of each class's features, ``R(Z) - 1/K Σ_k R(Z_k)`` with ``R(Z) = ½ logdet(I + ZᵀZ/(n ε))`` on centred
features: high when the whole set is rich but each class is compact. The rate depends on the
features' scale, as in the paper; compare candidates extracted the same way."""

from __future__ import annotations

import numpy as np

from transfuse.transferability.base import Score, check_inputs


def _rate(Z: np.ndarray, eps: float) -> float:
    n = len(Z)
    gram = Z @ Z.T if n < Z.shape[1] else Z.T @ Z  # the same non-zero spectrum: work on the smaller side
    _, logdet = np.linalg.slogdet(np.eye(len(gram)) + gram / (n * eps))
    return 0.5 * float(logdet)


def transrate(features, labels, eps: float = 1e-4) -> float:
    """TransRate with distortion ``eps``."""
    X, y, k = check_inputs(features, labels)
    Z = X - X.mean(axis=0)
    return _rate(Z, eps) - sum(_rate(Z[y == c], eps) for c in range(k)) / k


SCORES = (Score("transrate", transrate, description="coding rate of all features minus that within classes",
                reference="Huang et al., Frustratingly easy transferability estimation, ICML 2022"),)
