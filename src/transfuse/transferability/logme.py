"""LogME (You et al., ICML 2021): the log marginal likelihood of a Bayesian linear model from the
features to each one-hot label, its prior and noise precisions set by evidence maximisation,
averaged over classes and divided by the number of items.

Per class, with ``F = U S Vᵀ`` (thin SVD, so n < d and d < n cost the same) and ``z = Uᵀy``, the
fixed point alternates ``γ = Σ βσᵢ/(α+βσᵢ)``, ``m = βS z/(α+βσ)``, ``α = γ/|m|²``, ``β = (n-γ)/|y-Fm|²``
(σᵢ = sᵢ²), starting from α = β = 1.
"""

from __future__ import annotations

import numpy as np

from transfuse.transferability.base import Score, check_inputs


def _evidence(alpha: float, beta: float, n: int, d: int, sigma: np.ndarray, z: np.ndarray, outside: float) -> float:
    m = beta * np.sqrt(sigma) * z / (alpha + beta * sigma)
    residual = float(((z - np.sqrt(sigma) * m) ** 2).sum() + outside)
    logdet = float(np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * np.log(alpha))
    return (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi) - beta * residual
            - alpha * float((m ** 2).sum()) - logdet) / 2


def logme(features, labels, max_iter: int = 100, tol: float = 1e-5) -> float:
    """Mean over classes of the maximised log evidence per item (higher: labels more linearly
    predictable from the features, with the model's complexity paid for).

    >>> y = [0, 0, 1, 1, 2, 2, 3, 3]
    >>> logme(np.eye(4)[y] + 0.01 * np.arange(8)[:, None], y) > logme(np.arange(16.0).reshape(8, 2) % 5, y)
    True
    """
    F, y, k = check_inputs(features, labels)
    n, d = F.shape
    u, s, _ = np.linalg.svd(F, full_matrices=False)
    keep = s > s.max() * 1e-10 if s.size and s.max() > 0 else np.zeros_like(s, dtype=bool)
    u, sigma = u[:, keep], s[keep] ** 2
    total = 0.0
    for c in range(k):
        target = (y == c).astype(np.float64)
        z = u.T @ target
        outside = max(float(target @ target - z @ z), 0.0)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
            m = beta * np.sqrt(sigma) * z / (alpha + beta * sigma)
            m2 = float((m ** 2).sum())
            residual = float(((z - np.sqrt(sigma) * m) ** 2).sum() + outside)
            new_alpha = gamma / max(m2, 1e-12)
            new_beta = (n - gamma) / max(residual, 1e-12)
            converged = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        total += _evidence(alpha, beta, n, d, sigma, z, outside) / n
    return float(total / k)


SCORES = (Score("logme", logme, description="Bayesian linear evidence of the labels given the features",
                reference="You et al., LogME, ICML 2021"),)
