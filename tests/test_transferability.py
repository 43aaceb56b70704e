"""Transferability scores against independent direct computations, their invariances, and their
errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from transfuse.errors import DataError
from transfuse.transferability import get_score, scores
from transfuse.transferability.hscore import hscore
from transfuse.transferability.leep import leep, nce
from transfuse.transferability.logme import logme
from transfuse.transferability.sfda import sfda

FEATURE_SCORES = sorted(name for name, s in scores().items() if s.needs == "features")


def _data(n_per_class: int = 20, d: int = 8, k: int = 3, shift: float = 2.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    X = rng.normal(size=(len(y), d))
    X[:, :k] += shift * np.eye(k)[y]
    return X, y


def _evidence(F: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence of Bayesian linear regression t ~ N(Fw, 1/beta), w ~ N(0, 1/alpha), from its
    definition with explicit d x d matrices."""
    n, d = F.shape
    A = alpha * np.eye(d) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ t)
    _, logdet = np.linalg.slogdet(A)
    return 0.5 * (n * np.log(beta) + d * np.log(alpha) - n * np.log(2 * np.pi)
                  - beta * np.sum((t - F @ m) ** 2) - alpha * m @ m - logdet)


@pytest.mark.parametrize("shape", [(30, 5), (12, 40)])  # more items than dimensions, and fewer
def test_logme_is_the_maximum_evidence_of_a_brute_force_grid(shape):
    rng = np.random.default_rng(1)
    F = rng.normal(size=shape)
    y = np.arange(shape[0]) % 3
    grid = np.logspace(-4, 4, 161)
    best = np.mean([max(_evidence(F, (y == c).astype(float), a, b) for a, b in itertools.product(grid, grid))
                    for c in range(3)]) / shape[0]
    assert logme(F, y) >= best - 1e-3  # the fixed point finds the optimum the grid brackets
    assert logme(F, y) <= best + 0.01


def test_hscore_equals_its_definition_with_explicit_covariances():
    X, y = _data()
    cov = np.cov(X, rowvar=False, bias=True)
    means = np.stack([X[y == c].mean(axis=0) for c in range(3)])
    g = means[y] - X.mean(axis=0)
    between = g.T @ g / len(X)
    assert hscore(X, y) == pytest.approx(np.trace(np.linalg.inv(cov) @ between), rel=1e-9)


def test_leep_and_nce_equal_their_formulas_on_a_hand_built_joint():
    theta = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    y = np.array([0, 0, 1, 1, 1])
    n = len(y)
    joint = np.zeros((2, 3))
    for i in range(n):
        joint[y[i]] += theta[i] / n
    conditional = joint / joint.sum(axis=0)
    expected = np.mean([np.log(sum(conditional[y[i], z] * theta[i, z] for z in range(3))) for i in range(n)])
    assert leep(theta, y) == pytest.approx(expected, rel=1e-12)
    hard = theta.argmax(axis=1)
    joint_hard = np.zeros((2, 3))
    for i in range(n):
        joint_hard[y[i], hard[i]] += 1 / n
    cond_hard = joint_hard / np.where(joint_hard.sum(axis=0) > 0, joint_hard.sum(axis=0), 1)
    expected_nce = sum(joint_hard[a, b] * np.log(cond_hard[a, b]) for a in range(2) for b in range(3)
                       if joint_hard[a, b] > 0)
    assert nce(theta, y) == pytest.approx(expected_nce, rel=1e-12)
    assert nce(np.eye(3)[[0, 0, 1, 1, 2, 2]], [0, 0, 1, 1, 1, 1]) == pytest.approx(0.0)  # source classes decide


def test_invariances_the_papers_state():
    X, y = _data()
    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(X.shape[1], X.shape[1])) + 3 * np.eye(X.shape[1])  # invertible
    assert hscore(X @ mixing, y) == pytest.approx(hscore(X, y), rel=1e-6)  # any invertible linear map
    order = rng.permutation(len(y))
    for name in FEATURE_SCORES:
        if name in ("nleep", "probe"):  # seeded fits: item order changes their draws, not their meaning
            continue
        assert get_score(name).fn(X[order], y[order]) == pytest.approx(get_score(name).fn(X, y), rel=1e-6), name
    relabelled = np.array([2, 0, 1])[y]  # class names do not matter
    assert logme(X, relabelled) == pytest.approx(logme(X, y), rel=1e-9)


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_every_feature_score_is_deterministic_finite_and_prefers_separable_classes(name):
    fn = get_score(name).fn
    X, y = _data(shift=4.0)
    noise, _ = _data(shift=0.0, seed=5)
    assert fn(X, y) == fn(X, y)
    wide, y_wide = _data(n_per_class=5, d=200)  # fewer items than dimensions
    assert np.isfinite(fn(wide, y_wide))
    if name != "transrate":  # its rate difference is not a separability measure on synthetic shifts
        assert fn(X, y) > fn(noise, y), name


@pytest.mark.parametrize("name", sorted(scores()))
def test_bad_inputs_are_clear_errors(name):
    fn = get_score(name).fn
    X, y = _data()
    if get_score(name).needs == "source_probs":
        X = np.full((len(y), 4), 0.25)
    with pytest.raises(DataError, match="at least two classes"):
        fn(X, np.zeros(len(y)))
    with pytest.raises(DataError, match="one label per item"):
        fn(X, y[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fn(bad, y)
    with pytest.raises(DataError, match="has 1 item"):
        fn(X[:-19], y[:-19])
    with pytest.raises(DataError, match="unknown score"):
        get_score("nope")


def test_source_probabilities_must_be_probabilities():
    with pytest.raises(DataError, match="softmax"):
        leep([[2.0, -1.0], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], [0, 0, 1, 1])


def test_shrunk_hscore_equals_its_definition_with_the_ledoit_wolf_covariance():
    from sklearn.covariance import ledoit_wolf

    for n_per_class, d in ((20, 8), (4, 30)):
        X, y = _data(n_per_class=n_per_class, d=d)
        Xc = X - X.mean(axis=0)
        cov, _ = ledoit_wolf(Xc, assume_centered=True)
        means = np.stack([Xc[y == c].mean(axis=0) for c in range(3)])
        between = means[y].T @ means[y] / len(X)
        assert hscore(X, y, shrinkage=True) == pytest.approx(np.trace(np.linalg.inv(cov) @ between), rel=1e-6)


def test_sfda_equals_two_fisher_stages_built_from_scikit_learn():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y = _data()
    lda = LinearDiscriminantAnalysis(solver="eigen")
    first = lda.fit(X, y).predict_proba(X)  # unshrunk Fisher stage = plain LDA
    soft = np.exp(first) / np.exp(first).sum(axis=1, keepdims=True)
    confidence = soft[np.arange(len(y)), y][:, None]
    class_means = np.stack([X[y == c].mean(axis=0) for c in range(3)])
    others = np.stack([np.delete(class_means, c, axis=0).mean(axis=0) for c in y])  # the other classes' means
    mixed = confidence * X + (1 - confidence) * others
    expected = lda.fit(mixed, y).predict_proba(mixed)[np.arange(len(y)), y].mean()
    assert sfda(X, y, a=None) == pytest.approx(expected, rel=1e-8)
    mixing = np.random.default_rng(3).normal(size=(8, 8)) + 3 * np.eye(8)
    assert sfda(X @ mixing + 5.0, y, a=None) == pytest.approx(sfda(X, y, a=None), rel=1e-6)  # affine invariant
    assert 1 / 3 < sfda(X, y) <= sfda(X, y, a=None) + 1e-9  # shrinkage blurs the classes here
