import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import check_estimator

from transfuse.errors import DataError
from transfuse.heads import make_head
from transfuse.parts import part_kinds

HEADS = sorted(part_kinds("head"))


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
