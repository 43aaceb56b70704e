"""Base class of the transformers between extraction and head (fusion, selection).

Like the heads, each keeps what it learned as plain arrays in ``state_`` and a small
JSON-able ``meta_`` (what it kept, block weights, ...), and transforms from those alone,
so a saved pipeline predicts exactly as before and needs no pickle. ``get_state`` and
``from_state`` are the part protocol of :mod:`transfuse.parts`.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from transfuse.errors import DataError


class Step(TransformerMixin, BaseEstimator):
    """Fitted state in ``state_`` (arrays) and ``meta_`` (JSON); saved and restored whole by
    ``get_state``/``from_state``, so nothing can be left out of a save."""

    kind = "step"
    role = "selection"  # or "fusion"

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

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything ``transform`` uses: the learned arrays, and the parameters and report as meta."""
        check_is_fitted(self, "state_")
        return dict(self.state_), {"params": self.get_params(), "fitted": self.meta_}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> Step:
        """The fitted step that :meth:`get_state` described."""
        step = cls(**meta["params"])
        step.state_ = {k: np.asarray(v) for k, v in arrays.items()}
        step.meta_ = dict(meta["fitted"])
        step.n_features_in_ = int(step.meta_["n_features_in"])
        return step

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 throughout
        return tags

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "state_")
        return np.asarray([f"{self.kind}{i}" for i in range(self.meta_["n_features_out"])], dtype=object)
