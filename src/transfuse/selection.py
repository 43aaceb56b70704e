"""Selection and reduction: which columns, or which whole layer blocks, carry the signal.

Column steps (after fusion): :class:`PCAReducer`, :class:`VarianceSelector`,
:class:`KBestSelector` (ANOVA F or mutual information), :class:`L1Selector`; each is named in a
``--select`` spec by its ``kind`` and built from the text after the colon by ``from_arg``, so a
selection step a plugin declares is usable the same way.
Block selection: :func:`group_lasso_blocks` keeps at most ``budget`` whole blocks; fusion
steps call it through their ``select_blocks`` parameter. Every step reports what it kept in
``meta_``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from transfuse.errors import DataError
from transfuse.parts import part_kinds
from transfuse.steps import Step


class _ColumnSelector(Step):
    """Keeps the columns listed in ``state_["index"]``."""

    def transform(self, X) -> np.ndarray:
        X = self._check(X, reset=False)
        return X[:, self.state_["index"]].astype(np.float32)

    def _keep(self, index: np.ndarray, n_in: int, **report) -> _ColumnSelector:
        index = np.sort(np.asarray(index, dtype=np.int64))
        if len(index) == 0:
            raise DataError(f"{type(self).__name__} kept no feature; loosen its setting")
        self._finish({"index": index}, {"n_features_in": n_in, "n_features_out": int(len(index)),
                                        "kept_columns": index.tolist(), **report})
        return self


class VarianceSelector(_ColumnSelector):
    """Drop columns whose training variance is at most ``threshold``."""

    kind = "variance"

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold

    @classmethod
    def from_arg(cls, arg: str) -> VarianceSelector:
        """``variance`` or ``variance:THRESHOLD``."""
        return cls(float(arg) if arg else 0.0)

    def fit(self, X, y=None) -> VarianceSelector:
        X = self._check(X, reset=True)
        return self._keep(np.flatnonzero(X.var(axis=0) > self.threshold), X.shape[1])


class KBestSelector(_ColumnSelector):
    """The ``k`` columns with the highest univariate score (``score_func``: ``anova`` F or ``mutual_info``)."""

    kind = "kbest"

    def __init__(self, k: int = 512, score_func: str = "anova", random_state: int = 0) -> None:
        self.k = k
        self.score_func = score_func
        self.random_state = random_state

    @classmethod
    def from_arg(cls, arg: str) -> KBestSelector:
        """``kbest:K`` or ``kbest:K:mutual_info`` (K defaults to 512, the score to anova)."""
        k, _, score = arg.partition(":")
        _require(int(k or 512) >= 1, cls.kind, arg, "keeps at least 1 column")
        _require(score in ("", "anova", "mutual_info"), cls.kind, arg, "scores with anova or mutual_info")
        return cls(int(k or 512), score or "anova")

    def fit(self, X, y=None) -> KBestSelector:
        from sklearn.feature_selection import f_classif, mutual_info_classif

        X, y = self._check(X, reset=True, y=y, needs_y=True)
        if self.score_func == "anova":
            scores = np.nan_to_num(f_classif(X, y)[0], nan=0.0)
        elif self.score_func == "mutual_info":
            scores = mutual_info_classif(X, y, random_state=self.random_state)
        else:
            raise DataError(f"score_func must be 'anova' or 'mutual_info', got {self.score_func!r}")
        k = min(int(self.k), X.shape[1])
        return self._keep(np.argsort(-scores, kind="stable")[:k], X.shape[1], score_func=self.score_func)


class L1Selector(_ColumnSelector):
    """Columns with a non-zero weight in an L1-regularised logistic regression (``C`` small = fewer)."""

    kind = "l1"

    def __init__(self, C: float = 0.1, max_iter: int = 2000, random_state: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    @classmethod
    def from_arg(cls, arg: str) -> L1Selector:
        """``l1`` or ``l1:C`` (C defaults to 0.1; smaller keeps fewer columns)."""
        c = float(arg) if arg else 0.1
        _require(c > 0, cls.kind, arg, "needs C > 0")
        return cls(c)

    def fit(self, X, y=None) -> L1Selector:
        import inspect

        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        X, y = self._check(X, reset=True, y=y, needs_y=True)
        Z = StandardScaler().fit_transform(X)
        # newer scikit-learn spells a pure L1 penalty l1_ratio=1 and deprecates penalty="l1"
        l1 = {"l1_ratio": 1.0} if inspect.signature(LogisticRegression).parameters["penalty"].default == \
            "deprecated" else {"penalty": "l1"}
        clf = LogisticRegression(C=self.C, solver="saga", max_iter=self.max_iter, tol=1e-3,
                                 random_state=self.random_state, **l1)
        clf.fit(Z, y)
        self.n_iter_ = int(np.max(clf.n_iter_))
        return self._keep(np.flatnonzero(np.abs(clf.coef_).max(axis=0) > 0), X.shape[1], C=self.C)


class PCAReducer(Step):
    """PCA to ``n_components`` columns, or to the fraction of variance it names when below 1."""

    kind = "pca"

    def __init__(self, n_components: float = 0.95, random_state: int = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    @classmethod
    def from_arg(cls, arg: str) -> PCAReducer:
        """``pca:0.95`` (a fraction of the variance) or ``pca:64`` (a number of components)."""
        n = float(arg) if arg else 0.95
        _require(0 < n < 1 or (n >= 1 and n == int(n)), cls.kind, arg,
                 "takes a variance fraction in (0, 1) or a whole number of components")
        return cls(n if n < 1 else int(n))

    def fit(self, X, y=None) -> PCAReducer:
        from sklearn.decomposition import PCA

        X = self._check(X, reset=True)
        n = self.n_components
        if n >= 1:
            n = int(min(n, *X.shape))
        pca = PCA(n_components=n, svd_solver="full", random_state=self.random_state).fit(X)
        self._finish({"mean": pca.mean_, "components": pca.components_},
                     {"n_features_in": X.shape[1], "n_features_out": int(pca.n_components_),
                      "explained_variance": float(pca.explained_variance_ratio_.sum())})
        return self

    def transform(self, X) -> np.ndarray:
        X = self._check(X, reset=False)
        return ((X - self.state_["mean"]) @ self.state_["components"].T).astype(np.float32)


PARTS = (PCAReducer, VarianceSelector, KBestSelector, L1Selector)
BLOCK_BUDGET = "group-lasso"  # not a step of its own: the fusion keeps that many whole blocks


def parse_select(spec: str | None) -> tuple[int | None, list[Step]]:
    """``"group-lasso:2,pca:0.95"`` -> (block budget 2, [PCAReducer(0.95)]).

    Forms: ``group-lasso:N`` (keep at most N whole layer blocks, decided in fusion), then any
    selection step by kind with its argument: ``pca:0.95`` or ``pca:64``, ``variance[:thr]``,
    ``kbest:512[:mutual_info]``, ``l1[:C]``.
    """
    steps = part_kinds("selection")
    budget, chosen = None, []
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        name, _, arg = part.partition(":")
        try:
            if name == BLOCK_BUDGET:
                budget = int(arg or 2)
                _require(budget >= 1, name, arg, "keeps at least 1 block")
            elif name in steps:
                chosen.append(steps[name].from_arg(arg))
            else:
                examples = {"pca": "pca:0.95", "kbest": "kbest:512", "l1": "l1:0.1"}
                raise DataError(f"unknown selection {name!r}; use {', '.join(examples.get(k, k) for k in steps)} "
                                f"or {BLOCK_BUDGET}:2 (comma-separated to combine)")
        except ValueError as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"bad selection {part!r}: {exc}") from None
    return budget, chosen


def _require(ok: bool, name: str, arg: str, what: str) -> None:
    if not ok:
        given = f"{name}:{arg}" if arg else name
        raise DataError(f"bad selection {given!r}: {name} {what}")


def group_lasso_blocks(Z: np.ndarray, y_idx: np.ndarray, pairs: list[tuple[str, slice]], budget: int,
                       n_lambdas: int = 15, iters: int = 60) -> dict:
    """Keep at most ``budget`` whole blocks of standardised features ``Z`` by group lasso.

    Multinomial logistic regression with a penalty ``lam * sum_g sqrt(p_g) * ||W_g||``,
    solved by proximal gradient along a decreasing ``lam`` path (warm starts). Blocks are
    ranked by when they enter the model (then by weight norm); the first ``budget`` are kept.

    Only the columns of the blocks in ``pairs`` take part.

    >>> group_lasso_blocks(Z, y, [("a", slice(0, 40)), ("b", slice(40, 1320))], budget=1)["kept"]  # doctest: +SKIP
    ['b']
    """
    Z = np.concatenate([Z[:, s] for _, s in pairs], axis=1)
    offsets = np.cumsum([0] + [s.stop - s.start for _, s in pairs])
    pairs = [(name, slice(int(a), int(b))) for (name, _), a, b in zip(pairs, offsets[:-1], offsets[1:])]
    if budget < 1:
        raise DataError(f"group-lasso budget must be at least 1 block, got {budget}")
    n, _ = Z.shape
    k = int(y_idx.max()) + 1
    Y = np.eye(k)[y_idx]
    sizes = np.array([s.stop - s.start for _, s in pairs], dtype=float)
    grad0 = Z.T @ (Y - Y.mean(axis=0)) / n
    lam_max = max(np.linalg.norm(grad0[s]) / np.sqrt(w) for (_, s), w in zip(pairs, sizes))
    sigma = np.linalg.norm(Z, 2)
    step = 1.0 / (0.5 * sigma**2 / n + 1e-12)
    W = np.zeros((Z.shape[1], k))
    b = np.log(Y.mean(axis=0) + 1e-12)
    entered: dict[str, float] = {}
    for lam in lam_max * np.geomspace(0.95, 0.02, n_lambdas):
        for _ in range(iters):
            P = softmax(Z @ W + b, axis=1)
            G = Z.T @ (P - Y) / n
            b -= step * (P - Y).mean(axis=0)
            W -= step * G
            for (_, s), w in zip(pairs, sizes):  # group soft-thresholding
                norm = np.linalg.norm(W[s])
                W[s] *= max(0.0, 1.0 - step * lam * np.sqrt(w) / norm) if norm > 0 else 0.0
        for name, s in pairs:
            if name not in entered and np.linalg.norm(W[s]) > 0:
                entered[name] = float(lam)
        if len(entered) >= budget:
            break
    norms = {name: float(np.linalg.norm(W[s])) for name, s in pairs}
    order = sorted(norms, key=lambda nm: (-entered.get(nm, -1.0), -norms[nm]))
    kept = order[:budget]
    return {"kept": [nm for nm, _ in pairs if nm in kept], "entered_at": entered, "norms": norms}
