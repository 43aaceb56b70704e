"""Base class of the transformers between extraction and head (fusion, selection).

Like the heads, each keeps what it learned as plain arrays in ``state_`` and a small
JSON-able ``meta_`` (what it kept, block weights, ...), and transforms from those alone,
so a saved pipeline predicts exactly as before and needs no pickle.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from transfuse.errors import DataError


class Step(TransformerMixin, BaseEstimator):
    """Fitted state in ``state_`` (arrays) and ``meta_`` (JSON), restored by ``load_state``."""

    kind = "step"

    def _check(self, X, reset: bool, y=None, needs_y: bool = False):
        if needs_y and y is None:
            raise DataError(f"{type(self).__name__} is fitted with labels: call fit(X, y)")
        try:
            if reset:
                out = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=True)
                n = (out[0] if isinstance(out, tuple) else out).shape[0]
                if n < 2:
                    raise DataError(f"{type(self).__name__} needs at least 2 samples to fit, got {n} sample")
                return out
            check_is_fitted(self, "state_")
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        except ValueError as exc:
            raise DataError(f"{type(self).__name__}: {exc}") from None

    def _finish(self, state: dict[str, np.ndarray], meta: dict) -> None:
        self.state_ = {k: np.ascontiguousarray(v) for k, v in state.items()}
        self.meta_ = meta

    def load_state(self, state: dict[str, np.ndarray], meta: dict) -> "Step":
        """Restore a fitted step from saved arrays and metadata."""
        self.state_ = {k: np.asarray(v) for k, v in state.items()}
        self.meta_ = dict(meta)
        self.n_features_in_ = int(meta["n_features_in"])
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 throughout
        return tags

    def check_state(self) -> None:
        """Raise KeyError when a restored state lacks an array that ``transform`` needs."""
        needed = self._state_keys()
        missing = sorted(k for k in needed if k not in self.state_)
        if missing:
            raise KeyError(f"missing arrays {', '.join(missing)}")

    def _state_keys(self) -> list[str]:
        return []

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "state_")
        return np.asarray([f"{self.kind}{i}" for i in range(self.meta_["n_features_out"])], dtype=object)
