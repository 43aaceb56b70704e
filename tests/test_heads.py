import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import check_estimator

from transfuse.errors import DataError
from transfuse.heads import make_head
from transfuse.parts import part_kinds

HEADS = sorted(k for k, c in part_kinds("head").items() if getattr(c, "by_name", True))  # the sklearn part wraps
# a classifier the user fitted (tested in test_parts)


@pytest.mark.parametrize("kind", HEADS)
def test_sklearn_estimator_checks(kind):
    check_estimator(make_head(kind))


@pytest.mark.parametrize("kind", HEADS)
def test_heads_learn_real_digits_and_roundtrip_exactly(kind, tmp_path):
    X, y = load_digits(return_X_y=True)
    names = np.array([f"digit{d}" for d in range(10)])[y]
    head = make_head(kind).fit(X[:1200], names[:1200])
    assert head.fit(X[:1200], names[:1200]) is head
    assert head.score(X[1200:], names[1200:]) > 0.85
    arrays, meta = head.get_state()
    save_file(arrays, str(tmp_path / "h.safetensors"))
    again = type(head).from_state(load_file(str(tmp_path / "h.safetensors")), meta)
    assert np.array_equal(again.predict(X[1200:]), head.predict(X[1200:]))
    if hasattr(head, "predict_proba"):
        assert np.array_equal(again.predict_proba(X[1200:]), head.predict_proba(X[1200:]))


def test_probabilities_only_where_they_make_sense():
    assert hasattr(make_head("logreg"), "predict_proba")
    assert not hasattr(make_head("svm"), "predict_proba")
    assert not hasattr(make_head("ridge"), "predict_proba")


def test_unknown_head_and_wrong_width():
    with pytest.raises(DataError, match="choose one of logreg"):
        make_head("forest")
    head = make_head().fit(np.random.rand(20, 4), [0, 1] * 10)
    with pytest.raises(DataError, match="same backbone, layers and pooling"):
        head.predict(np.random.rand(3, 5))


@pytest.mark.parametrize("kind", [k for k in HEADS if k != "knn"])
def test_balanced_class_weight_lifts_the_rare_class_and_is_saved(kind):
    """Real digits with one class cut to 8 examples against ~120 of each other: weighting the classes
    by inverse frequency raises the balanced accuracy, and the setting travels with the saved head."""
    X, y = load_digits(return_X_y=True)
    train = np.concatenate([np.flatnonzero(y[:1200] != 3), np.flatnonzero(y[:1200] == 3)[:8]])
    test = np.arange(1200, len(y))
    from sklearn.metrics import balanced_accuracy_score, recall_score

    plain = make_head(kind, C=0.001) if kind in ("logreg", "svm") else make_head(kind)
    weighted = make_head(kind, **plain.get_params() | {"class_weight": "balanced"})
    scores = []
    for head in (plain, weighted):
        pred = head.fit(X[train], y[train]).predict(X[test])
        scores.append((recall_score(y[test], pred, labels=[3], average="macro"), balanced_accuracy_score(y[test], pred)))
    assert scores[1][0] > scores[0][0] + 0.3 and scores[1][1] > scores[0][1], scores  # measured: recall 0 -> 0.66-0.81
    arrays, meta = weighted.get_state()
    assert meta["params"]["class_weight"] == "balanced"
    assert np.array_equal(type(weighted).from_state(arrays, meta).predict(X[test]), weighted.predict(X[test]))
    with pytest.raises(DataError, match="class_weight must be 'balanced', a"):
        make_head(kind, class_weight="heavy").fit(X[:100], y[:100])
