"""Saved models from the user's side: a fitted model in, a model directory out, and back.

A probe model is an sklearn ``Pipeline``: a featurizer (``features``), fusion and selection steps,
then a ``head``; a fine-tuned model is a single part. :func:`save_model` and :func:`load_model`
hand the parts to :mod:`transfuse.modeldir`, which writes and reads every kind the same way
(configuration in JSON, learned numbers in safetensors, no pickle), so a loaded model predicts
exactly what it predicted before saving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

from transfuse.errors import ModelDirError
from transfuse.modeldir import FORMAT_VERSION, load_parts, read_config, save_parts
from transfuse.parts import Part

__all__ = ["FORMAT_VERSION", "load_model", "make_model", "model_classes", "model_modality", "pipeline_outputs", "read_config",
           "save_model"]


def make_model(featurizer, head, steps: list[tuple[str, object]] | None = None) -> Pipeline:
    """items -> features -> [fusion and selection steps] -> head."""
    return Pipeline([("features", featurizer), *(steps or []), ("head", head)])


def save_model(model, out_dir: str | Path, metrics: dict | None = None, extra: dict | None = None,
               files: dict | None = None, force: bool = False, data: dict | None = None) -> Path:
    """Save a fitted model (a Pipeline of transfuse parts, or one part such as a fine-tuned network)
    to ``out_dir`` and return its path. An existing model there is replaced whole or not at all;
    other contents are refused unless ``force``. The head may be any fitted scikit-learn classifier
    (see :mod:`transfuse.sklearn_head`). ``files`` maps extra file names to callables
    ``fn(path)`` that write them (plots); ``data`` holds arrays about the model (the digest ids
    of its training items, which ``evaluate`` uses to flag overlap).

    >>> save_model(model, "models/fashion")  # doctest: +SKIP
    PosixPath('models/fashion')
    """
    parts = list(model.steps) if isinstance(model, Pipeline) else [("model", model)]
    name, last = parts[-1]
    if isinstance(model, Pipeline) and not isinstance(last, Part) and hasattr(last, "predict"):
        from transfuse.sklearn_head import SklearnHead

        parts[-1] = (name, SklearnHead(last))  # any scikit-learn classifier, stored without pickle
    strangers = [name for name, part in parts if not isinstance(part, Part)]
    if strangers:
        raise ModelDirError(f"save_model saves transfuse parts (a featurizer, fusion and selection steps, a head, or a "
                            f"fine-tuned model); {', '.join(map(repr, strangers))} is not one")
    return save_parts(parts, out_dir, metrics=metrics, extra=extra, files=files, force=force, data=data)


def load_model(model_dir: str | Path, **settings):
    """Load a model directory saved by :func:`save_model`, ``transfuse fit`` or ``transfuse finetune``
    (any format since the first): a Pipeline, or the single part it holds.

    ``settings`` change how its first part runs, such as ``device``, ``num_workers``, ``batch_size``
    or ``cache`` (never what the features are). Features are computed with the engine the model was
    trained with when it can run here; ``runtime``/``precision`` pick another (its features agree
    with fp32 to a cosine of at least 0.99).

    >>> model = load_model("models/fashion")  # doctest: +SKIP
    >>> model.predict(["shoe.png"])  # doctest: +SKIP
    array(['sneaker'], dtype='<U11')
    """
    parts, _ = load_parts(model_dir)
    configure = getattr(parts[0][1], "configure", None)
    if configure is not None:
        try:
            configure(**settings)  # also checks what the part needs here (the backbone weights it was trained on)
        except ModelDirError as exc:
            raise ModelDirError(f"{model_dir}: {exc}") from None
    if len(parts) == 1:
        return parts[0][1]
    model = Pipeline(parts)
    _holds_together(model, model_dir)
    return model


def _holds_together(model: Pipeline, model_dir) -> None:
    """Run two rows of zeros through the steps and head after the featurizer: a config whose parts
    no longer fit each other (an edited width, layout or class list) fails here, with one clear
    line, instead of halfway through a prediction."""
    first = model.steps[0][1]
    width = getattr(first, "n_features_out_", None)
    if width is None or getattr(first, "role", None) != "featurizer":
        return
    try:
        rest = model[1:]
        X = np.zeros((2, int(width)), np.float32)
        scores = rest.predict_proba(X) if hasattr(rest, "predict_proba") else rest.predict(X)
        if len(scores) != 2:
            raise ValueError(f"{len(scores)} predictions for 2 rows")
    except Exception as exc:  # noqa: BLE001  (any failure here means the saved parts disagree)
        raise ModelDirError(f"{model_dir}: its parts do not fit together ({type(exc).__name__}: {str(exc)[:200]}); "
                            f"the save is broken or was edited, fit again") from None


def model_classes(model) -> np.ndarray:
    """The class labels a loaded model (a Pipeline or one whole-model part) predicts."""
    return model.steps[-1][1].classes_ if isinstance(model, Pipeline) else model.classes_


def model_modality(model) -> str:
    """What a loaded model reads: "image", "text" or "audio"."""
    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    return first.modality


def pipeline_outputs(model: Pipeline, items: list, on_error: str = "raise") -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray | None]:
    """``(readable mask, labels of the readable items, their probabilities or None)`` of a probe pipeline
    (None when its head gives scores only: svm, ridge); unreadable files raise unless ``on_error="skip"``.
    The featurizer runs once."""
    model.steps[0][1].configure(on_error=on_error)
    X = model.steps[0][1].transform(items)
    ok = np.ones(X.shape[0], bool) if sp.issparse(X) else ~np.isnan(X).any(axis=1)  # tfidf reads any text
    if not ok.any():
        return ok, np.array([]), None
    rest, X = model[1:], X[ok]
    return ok, rest.predict(X), rest.predict_proba(X) if hasattr(rest, "predict_proba") else None
