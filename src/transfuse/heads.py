"""Probe heads: standardise, then a classifier, all sklearn-compatible.

Every head but kNN takes ``class_weight="balanced"`` (each class weighted by the inverse of its
frequency, so rare classes count as much as common ones: ``--class-weight balanced``).

Each head is fitted with scikit-learn and then keeps what it learned as plain arrays in
``state_`` (standardisation, weights). Prediction runs on those arrays, so a head saved
to safetensors and loaded back predicts exactly as before, with no pickle involved
(``get_state``/``from_state``, the part protocol of :mod:`transfuse.parts`). A head in another
file is usable by name (``--head``) once it is declared in that module's ``PARTS``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from transfuse.errors import DataError
from transfuse.parts import part_kinds


class Head(ClassifierMixin, BaseEstimator):
    """Base class: standardisation + a classifier whose parameters live in ``state_``.

    ``standardize=False`` keeps the columns as they come (after a ConcatFusion, whose per-block
    scaling is what balances wide and narrow layers)."""

    kind = "base"
    role = "head"
    has_proba = True
    sparse_ok: str | bool = "csr"  # reads sparse rows (TF-IDF) unscaled; False where the state would be sparse

    def fit(self, X, y) -> Head:
        """Standardise ``X`` and fit the classifier."""
        if sp.issparse(X) and not self.sparse_ok:
            raise DataError(f"the {self.kind} head cannot read sparse (tfidf) features; use logreg, svm or ridge")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], accept_sparse=self.sparse_ok)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise DataError(f"a head needs at least 2 classes to learn from, got 1 class ({self.classes_[0]!r})")
        self._weights = self._class_weights()
        if getattr(self, "standardize", True) and not sp.issparse(X):
            scaler = StandardScaler().fit(X)
            mean, scale = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        else:  # the step before scaled the columns on purpose (ConcatFusion's block balance, TF-IDF's norm)
            mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.state_ = {"mean": mean, "scale": scale}
        try:
            self.state_.update(self._fit_state(X if sp.issparse(X) else (X - mean) / scale, y_idx))
        except InvalidParameterError as exc:
            raise DataError(f"invalid {self.kind} head parameter: {exc}") from None
        # C order: safetensors stores raw buffers, and sklearn often returns Fortran-ordered coefs
        self.state_ = {k: np.ascontiguousarray(v) for k, v in self.state_.items()}
        return self

    def _fit_state(self, Z: np.ndarray, y_idx: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _class_weights(self) -> str | dict | None:
        """``class_weight`` as the classifier (fitted on class indices) takes it: None, "balanced", or
        ``{label: weight}`` turned into ``{index: weight}`` (unlisted classes weigh 1)."""
        given = getattr(self, "class_weight", None)
        if isinstance(given, dict):
            return {i: float(given.get(c, given.get(str(c), 1.0))) for i, c in enumerate(self.classes_)}
        if given not in (None, "balanced"):
            raise DataError(f"class_weight must be 'balanced', a {{class: weight}} mapping or none, got {given!r}")
        return given

    def _standardise(self, X) -> np.ndarray:
        check_is_fitted(self, "state_")
        try:
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, accept_sparse=self.sparse_ok)
        except (ValueError, TypeError) as exc:
            hint = "use the same backbone, layers and pooling as in training" if "features" in str(exc) else \
                "rows with NaN come from unreadable inputs: drop them before predicting"
            raise DataError(f"{exc}; {hint}") from None
        if sp.issparse(X):  # sparse rows are fitted unscaled (mean 0, scale 1)
            return X
        return (X - self.state_["mean"]) / self.state_["scale"]

    # -- saving -------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The learned arrays, and the parameters and class labels as meta."""
        check_is_fitted(self, "state_")
        return dict(self.state_), {"params": self.get_params(), "classes": self.classes_.tolist()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> Head:
        """The fitted head that :meth:`get_state` described."""
        head = cls(**meta["params"])
        head.state_ = {k: np.asarray(v) for k, v in arrays.items()}
        head.classes_ = np.asarray(meta["classes"])
        head.n_features_in_ = int(head.state_["mean"].shape[0])
        head._check_classes()
        return head

    def _check_classes(self) -> None:
        """The class list must fit the learned arrays (a hand-edited config must not shift labels)."""
        outputs, n = self._outputs(), len(self.classes_)
        if outputs is not None and outputs != n and not (outputs == 1 and n == 2):
            raise ValueError(f"{n} classes are listed for a head that scores {outputs}")

    def _outputs(self) -> int | None:
        """How many class scores the learned arrays give (1 for a binary linear head; None: unknown)."""
        return int(self.state_["intercept"].shape[0]) if "intercept" in self.state_ else None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        tags.input_tags.sparse = bool(self.sparse_ok)
        return tags


def _gives_proba(head: LinearHead) -> bool:
    return head.has_proba


class LinearHead(Head):
    """Heads whose scores are an affine map of the standardised features (or an MLP's output)."""

    def decision_function(self, X) -> np.ndarray:
        """Per-class scores, shape ``(n, n_classes)`` (``(n,)`` for two classes)."""
        return self._scores(self._standardise(X))

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        scores = Z @ self.state_["coef"].T + self.state_["intercept"]
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    @available_if(_gives_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the scores; logistic for two classes)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1 - p, p])
        return softmax(scores, axis=1)


class LogisticHead(LinearHead):
    """Multinomial logistic regression (L2, ``C`` = inverse regularisation). The default head.

    >>> LogisticHead(C=0.5).fit(X_train, y_train).predict_proba(X_test)  # doctest: +SKIP
    """

    kind = "logreg"

    def __init__(self, C: float = 1.0, max_iter: int = 1000, standardize: bool = True,
                 class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.standardize = standardize
        self.class_weight = class_weight

    def _fit_state(self, Z, y_idx):
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self._weights).fit(Z, y_idx)
        self.n_iter_ = int(np.max(clf.n_iter_))
        return {"coef": clf.coef_, "intercept": clf.intercept_}


class LinearSVMHead(LinearHead):
    """Linear SVM (one-vs-rest, squared hinge). Scores only, no probabilities."""

    kind = "svm"
    has_proba = False

    def __init__(self, C: float = 1.0, max_iter: int = 5000, standardize: bool = True,
                 class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.standardize = standardize
        self.class_weight = class_weight

    def _fit_state(self, Z, y_idx):
        from sklearn.svm import LinearSVC

        clf = LinearSVC(C=self.C, max_iter=self.max_iter, class_weight=self._weights).fit(Z, y_idx)
        self.n_iter_ = int(clf.n_iter_)
        return {"coef": clf.coef_, "intercept": np.atleast_1d(clf.intercept_)}


class RidgeHead(LinearHead):
    """Ridge classifier (least squares on ±1 targets). Scores only, no probabilities."""

    kind = "ridge"
    has_proba = False

    def __init__(self, alpha: float = 1.0, standardize: bool = True, class_weight: str | None = None) -> None:
        self.alpha = alpha
        self.standardize = standardize
        self.class_weight = class_weight

    def _fit_state(self, Z, y_idx):
        from sklearn.linear_model import RidgeClassifier

        clf = RidgeClassifier(alpha=self.alpha, class_weight=self._weights).fit(Z, y_idx)
        return {"coef": np.atleast_2d(clf.coef_), "intercept": np.atleast_1d(clf.intercept_)}


class KNNHead(Head):
    """k nearest neighbours on standardised features (stores the training set)."""

    kind = "knn"
    sparse_ok = False  # it would store the sparse training rows

    def __init__(self, n_neighbors: int = 5, weights: str = "distance", metric: str = "cosine",
                 standardize: bool = True) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.standardize = standardize

    def _fit_state(self, Z, y_idx):
        return {"train": Z, "train_y": y_idx.astype(np.int64)}

    def _knn(self):
        from sklearn.neighbors import KNeighborsClassifier

        k = min(self.n_neighbors, len(self.state_["train_y"]))
        knn = KNeighborsClassifier(n_neighbors=k, weights=self.weights, metric=self.metric, algorithm="brute")
        return knn.fit(self.state_["train"], self.state_["train_y"])

    def predict_proba(self, X) -> np.ndarray:
        """Distance-weighted neighbour votes per class."""
        Z = self._standardise(X)
        proba = self._knn().predict_proba(Z)
        full = np.zeros((proba.shape[0], len(self.classes_)))
        full[:, np.unique(self.state_["train_y"])] = proba
        return full

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def _outputs(self) -> int:
        return int(self.state_["train_y"].max()) + 1  # every class has stored neighbours


class MLPHead(LinearHead):
    """One hidden ReLU layer trained with Adam and early stopping (sklearn's MLPClassifier)."""

    kind = "mlp"

    def __init__(self, hidden: int = 256, alpha: float = 1e-3, max_iter: int = 300, random_state: int = 0,
                 standardize: bool = True, class_weight: str | None = None) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state
        self.standardize = standardize
        self.class_weight = class_weight

    def _fit_state(self, Z, y_idx):
        from sklearn.neural_network import MLPClassifier
        from sklearn.utils.class_weight import compute_sample_weight

        early = len(y_idx) >= 50
        weights = compute_sample_weight(self._weights, y_idx) if self._weights else None
        clf = MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=self.alpha, max_iter=self.max_iter,
                            early_stopping=early, random_state=self.random_state)
        clf.fit(Z, y_idx, **({"sample_weight": weights} if weights is not None else {}))  # scikit-learn >= 1.7
        self.n_iter_ = int(clf.n_iter_)
        return {"w0": clf.coefs_[0], "b0": clf.intercepts_[0], "w1": clf.coefs_[1], "b1": clf.intercepts_[1]}

    def _outputs(self) -> int:
        return int(self.state_["b1"].shape[0])

    def _scores(self, Z):
        hidden = np.maximum(Z @ self.state_["w0"] + self.state_["b0"], 0.0)
        scores = hidden @ self.state_["w1"] + self.state_["b1"]
        return scores.ravel() if scores.shape[1] == 1 else scores


PARTS = (LogisticHead, LinearSVMHead, RidgeHead, KNNHead, MLPHead)


def make_head(kind: str = "logreg", **params) -> Head:
    """Build a registered head by name: ``logreg`` (default), ``svm``, ``ridge``, ``knn``, ``mlp``, or one
    a plugin declares.

    >>> make_head("ridge", alpha=10.0)
    RidgeHead(alpha=10.0)
    """
    heads = {k: c for k, c in part_kinds("head").items() if getattr(c, "by_name", True)}
    if kind not in heads:
        raise DataError(f"unknown head {kind!r}; choose one of {', '.join(heads)}")
    allowed = sorted(heads[kind]().get_params())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise DataError(f"head {kind!r} has no parameter {', '.join(unknown)}; it takes {', '.join(allowed)}")
    return heads[kind](**params)
