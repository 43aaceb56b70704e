"""GBC (Pándy et al., CVPR 2022): how little the classes overlap in feature space. Each class is a
Gaussian with a diagonal covariance (on PCA-reduced features, 64 dimensions at most); the score
is minus the sum over class pairs of their Bhattacharyya coefficients ``exp(-D_B)``, so 0 means
fully separated classes."""

from __future__ import annotations

import numpy as np

from transfuse.transferability.base import Score, check_inputs


def gbc(features, labels, dims: int = 64, seed: int = 0) -> float:
    """Gaussian Bhattacharyya coefficient score (at most 0)."""
    from sklearn.decomposition import PCA

    X, y, k = check_inputs(features, labels)
    n_components = min(dims, X.shape[1], len(X) - 1)
    Z = PCA(n_components=n_components, random_state=seed).fit_transform(X) if X.shape[1] > n_components else X
    means = np.stack([Z[y == c].mean(axis=0) for c in range(k)])
    variances = np.stack([Z[y == c].var(axis=0) for c in range(k)]) + 1e-6
    total = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            pooled = (variances[i] + variances[j]) / 2
            distance = ((means[i] - means[j]) ** 2 / pooled).sum() / 8 + 0.5 * (
                np.log(pooled).sum() - 0.5 * (np.log(variances[i]).sum() + np.log(variances[j]).sum()))
            total += 2 * np.exp(-distance)  # both orders of the pair, as the published sum over i != j
    return -float(total)


SCORES = (Score("gbc", gbc, description="minus the class overlap (Bhattacharyya) of per-class Gaussians",
                reference="Pándy et al., Transferability estimation using Bhattacharyya class separability, "
                          "CVPR 2022"),)
