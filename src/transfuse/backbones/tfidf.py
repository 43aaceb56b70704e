"""``tfidf``: the bag-of-words baseline for text, as a backbone name.

Unlike a network it is *fitted*: vocabulary and inverse document frequencies are learned from
the training split only (learning them from the test texts too would leak), so it is not a
cached per-item feature but the first step of the pipeline, :class:`TfidfFeatures`. A saved
model keeps the vocabulary in ``vocabulary.json`` and the idf weights in safetensors; rows are
sparse (one column per term), which the linear heads read as they are.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from transfuse.backbones.registry import BackboneSpec, register_backbone
from transfuse.backbones.text import TextSpec
from transfuse.errors import DataError

NAME = "tfidf"


class TfidfFeatures(TransformerMixin, BaseEstimator):
    """Texts in, L2-normalised TF-IDF rows (sparse CSR, float32) out.

    Word n-grams from 1 to ``ngram_max``, kept when they occur in at least ``min_df`` training
    texts (``max_features`` most frequent at most), term counts damped as ``1 + log(tf)``.
    After ``fit``, ``state_`` holds the ``idf`` array and ``meta_["vocabulary"]`` the terms in
    column order: all that ``transform`` needs, so a saved model predicts exactly as fitted.

    >>> from transfuse.heads import LogisticHead  # doctest: +SKIP
    >>> make_pipeline(TfidfFeatures(), LogisticHead()).fit(texts, labels)  # doctest: +SKIP
    """

    kind = NAME
    backbone = NAME  # what a pipeline's first step reports, like FeatureExtractor.backbone

    def __init__(self, ngram_max: int = 2, min_df: int = 2, max_features: int | None = 200_000) -> None:
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features

    def _counter(self, vocabulary: dict[str, int] | None = None) -> CountVectorizer:
        return CountVectorizer(ngram_range=(1, self.ngram_max), vocabulary=vocabulary, dtype=np.float32)

    def fit(self, X, y=None) -> "TfidfFeatures":
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

    def load_state(self, state: dict[str, np.ndarray], meta: dict) -> "TfidfFeatures":
        """Restore a fitted vectoriser from its idf array and vocabulary."""
        if "idf" not in state or len(state["idf"]) != len(meta.get("vocabulary", ())):
            raise KeyError("idf array and vocabulary do not match")
        self.state_ = {"idf": np.asarray(state["idf"], dtype=np.float64)}
        self.meta_ = {"vocabulary": list(meta["vocabulary"]), "n_features_out": len(meta["vocabulary"])}
        self.n_features_out_ = self.meta_["n_features_out"]
        return self

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "state_")
        return np.asarray(self.meta_["vocabulary"], dtype=object)


def _texts(X) -> list[str]:
    return [str(t) for t in np.asarray(X, dtype=object).ravel()]


def _not_a_network(weights: str):
    raise DataError(f"{NAME} is fitted on the training texts, not a network with layers: use it through "
                    f"`transfuse fit DATA --backbone {NAME}` or transfuse.backbones.tfidf.TfidfFeatures")


register_backbone(BackboneSpec(
    name=NAME, build=_not_a_network, input_spec=TextSpec(tokenizer="words-1-2grams", max_tokens=0),
    weights_id="tfidf:fitted", modality="text", trainable=False, fitted=True,
    description="TF-IDF of word 1-2 grams fitted on the training split (no transfer: the text baseline)"))
