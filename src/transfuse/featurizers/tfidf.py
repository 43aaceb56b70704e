"""``tfidf``: the bag-of-words baseline for text (no transfer), a *fitted* featurizer.

Unlike a network it learns from the data: vocabulary and inverse document frequencies come from
the training split only (learning them from the test texts too would leak), so it is not a
cached per-item feature but the first step of the pipeline, :class:`TfidfFeatures`, chosen by
``--backbone tfidf``. A saved model keeps the idf weights and the vocabulary (UTF-8 terms) in its
safetensors file; rows are sparse (one column per term), which the linear heads read as they are.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from transfuse.errors import DataError
from transfuse.parts import decode_strings, encode_strings


class TfidfFeatures(TransformerMixin, BaseEstimator):
    """Texts in, L2-normalised TF-IDF rows (sparse CSR, float32) out.

    Word n-grams from 1 to ``ngram_max``, kept when they occur in at least ``min_df`` training
    texts (``max_features`` most frequent at most), term counts damped as ``1 + log(tf)``.
    After ``fit``, ``state_`` holds the ``idf`` array and ``meta_["vocabulary"]`` the terms in
    column order: all that ``transform`` needs, so a saved model predicts exactly as fitted.

    >>> from transfuse.heads import LogisticHead  # doctest: +SKIP
    >>> make_pipeline(TfidfFeatures(), LogisticHead()).fit(texts, labels)  # doctest: +SKIP
    """

    kind = "tfidf"  # also the name it is chosen by: --backbone tfidf
    role = "featurizer"
    fitted = True  # learned from the training split: no layers, pooling, weights or engine
    modality = "text"
    backbone = kind  # what a pipeline's first step reports, like FeatureExtractor.backbone
    description = "TF-IDF of word 1-2 grams fitted on the training split (no transfer: the text baseline)"

    def __init__(self, ngram_max: int = 2, min_df: int = 2, max_features: int | None = 200_000) -> None:
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features

    def _counter(self, vocabulary: dict[str, int] | None = None) -> CountVectorizer:
        return CountVectorizer(ngram_range=(1, self.ngram_max), vocabulary=vocabulary, dtype=np.float32)

    def fit(self, X, y=None) -> TfidfFeatures:
        """Learn the vocabulary and idf weights from the training texts ``X``."""
        texts = _texts(X)
        if len(texts) < 2:
            raise DataError(f"tfidf needs at least 2 training texts, got {len(texts)}")
        min_df = self.min_df if len(texts) >= 10 * self.min_df else 1  # tiny data: keep every term
        vec = TfidfVectorizer(ngram_range=(1, self.ngram_max), min_df=min_df, max_features=self.max_features,
                              sublinear_tf=True)
        try:
            vec.fit(texts)
        except ValueError as exc:  # "empty vocabulary; perhaps the documents only contain stop words"
            raise DataError(f"tfidf found no words to learn from in {len(texts)} texts ({exc})") from None
        terms = vec.get_feature_names_out().tolist()
        self.state_ = {"idf": np.ascontiguousarray(vec.idf_, dtype=np.float64)}
        self.meta_ = {"vocabulary": terms, "n_features_out": len(terms)}
        self.n_features_out_ = len(terms)
        return self

    def transform(self, X) -> sp.csr_matrix:
        """TF-IDF rows of ``X``; terms never seen in training are ignored (an all-zero row is fine)."""
        check_is_fitted(self, "state_")
        terms = self.meta_["vocabulary"]
        counts = self._counter({t: i for i, t in enumerate(terms)}).transform(_texts(X)).tocsr()
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf
        weighted = counts @ sp.diags(self.state_["idf"].astype(np.float32))
        return normalize(weighted, norm="l2", copy=False).astype(np.float32).tocsr()

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The idf weights and the vocabulary (as UTF-8 bytes), and the parameters as meta."""
        check_is_fitted(self, "state_")
        return {"idf": self.state_["idf"], "vocabulary": encode_strings(self.meta_["vocabulary"])}, \
            {"params": self.get_params()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> TfidfFeatures:
        """The fitted vectoriser that :meth:`get_state` described."""
        terms = decode_strings(arrays["vocabulary"])
        if len(arrays["idf"]) != len(terms):
            raise ValueError(f"{len(arrays['idf'])} idf weights for {len(terms)} terms")
        featurizer = cls(**meta["params"])
        featurizer.state_ = {"idf": np.asarray(arrays["idf"], dtype=np.float64)}
        featurizer.meta_ = {"vocabulary": terms, "n_features_out": len(terms)}
        featurizer.n_features_out_ = len(terms)
        return featurizer

    def configure(self, **settings) -> TfidfFeatures:
        """Run-time settings of a network featurizer (device, cache, engine...) do not apply here."""
        return self

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "state_")
        return np.asarray(self.meta_["vocabulary"], dtype=object)


def _texts(X) -> list[str]:
    return [str(t) for t in np.asarray(X, dtype=object).ravel()]


PARTS = (TfidfFeatures,)
