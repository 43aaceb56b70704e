"""Scores from the source task's own predictions: LEEP (Nguyen et al., ICML 2020) and NCE (Tran et
al., ICCV 2019) read the source classifier's probabilities per item; NLEEP (Li et al., CVPR 2021)
replaces them with the posteriors of a Gaussian mixture fitted on the features.

With θᵢ(z) the source probabilities, the empirical joint is ``P(y, z) = 1/n Σᵢ θᵢ(z)[yᵢ = y]``;
LEEP is ``1/n Σᵢ log Σ_z P(yᵢ | z) θᵢ(z)``; NCE is ``Σ_{y,z} P(y, z) log P(y | z)`` with each item's
most probable source class as a hard label (the negative conditional entropy).
"""

from __future__ import annotations

import numpy as np

from transfuse.errors import DataError
from transfuse.transferability.base import Score, check_inputs


def _probabilities(source_probs, labels) -> tuple[np.ndarray, np.ndarray, int]:
    theta, y, k = check_inputs(source_probs, labels, what="source probabilities")
    if (theta < 0).any() or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-3):
        raise DataError("source probabilities must be non-negative and sum to 1 per item (apply a softmax to "
                        "logits first)")
    return theta, y, k


def _conditional(theta: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    joint = np.stack([theta[y == c].sum(axis=0) for c in range(k)]) / len(y)  # (k, Z)
    marginal = joint.sum(axis=0)
    return joint, joint / np.where(marginal > 0, marginal, 1.0)


def leep(source_probs, labels) -> float:
    """Log expected empirical prediction of the labels through the source classes (at most 0).

    >>> round(leep([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [0, 0, 1, 1]), 6)
    0.0
    """
    theta, y, k = _probabilities(source_probs, labels)
    _, conditional = _conditional(theta, y, k)
    expected = (theta * conditional[y]).sum(axis=1)
    return float(np.log(np.clip(expected, 1e-300, None)).mean())


def nce(source_probs, labels) -> float:
    """Negative conditional entropy of the labels given each item's most probable source class."""
    theta, y, k = _probabilities(source_probs, labels)
    hard = np.eye(theta.shape[1])[theta.argmax(axis=1)]
    joint, conditional = _conditional(hard, y, k)
    mask = joint > 0
    return float((joint[mask] * np.log(conditional[mask])).sum())


def nleep(features, labels, components_per_class: int = 5, variance: float = 0.8, seed: int = 0) -> float:
    """LEEP with a Gaussian mixture's posteriors in place of a source head: PCA keeping ``variance``
    of the spread, then ``components_per_class`` x classes diagonal components (fewer when items are
    few), seeded."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    X, y, k = check_inputs(features, labels)
    reduced = PCA(n_components=variance, svd_solver="full", random_state=seed).fit_transform(X) \
        if X.shape[1] > 1 and np.ptp(X, axis=0).any() else X
    components = max(2, min(components_per_class * k, len(X) // 2))
    mixture = GaussianMixture(components, covariance_type="diag", random_state=seed, reg_covar=1e-4)
    posteriors = mixture.fit(reduced).predict_proba(reduced)
    _, conditional = _conditional(posteriors, y, k)
    return float(np.log(np.clip((posteriors * conditional[y]).sum(axis=1), 1e-300, None)).mean())


SCORES = (Score("leep", leep, needs="source_probs", description="log expected empirical prediction through the "
                "source head", reference="Nguyen et al., LEEP, ICML 2020"),
          Score("nce", nce, needs="source_probs", description="negative conditional entropy given the source "
                "head's classes", reference="Tran et al., Transferability and hardness, ICCV 2019"),
          Score("nleep", nleep, description="LEEP through Gaussian-mixture pseudo-classes of the features",
                reference="Li et al., Ranking neural checkpoints, CVPR 2021"))
