"""The one persistence protocol: every registered part kind saves, loads and predicts exactly as
before (parametrised over the registry itself, so a new kind is tested without a new test), and
model directories of every older format still load and predict what their version predicted."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline

from transfuse.data import load_image_folder, load_source
from transfuse.errors import ModelDirError
from transfuse.heads import LogisticHead
from transfuse.parts import ROLES, Part, part_kinds
from transfuse.pipeline import load_model, save_model

from conftest import REPO

LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.fixture(scope="module")
def digits():
    """Real data with classes (scikit-learn's 8x8 digits), as four 16-column blocks."""
    X, y = load_digits(return_X_y=True)
    return X[:300].astype(np.float32), np.array([f"digit{d}" for d in y[:300]])


BLOCKS = {f"b{i}": [16 * i, 16 * (i + 1)] for i in range(4)}


def _step(cls, digits, tmp_path):
    X, y = digits
    step = cls(blocks=BLOCKS) if cls.role == "fusion" else cls()
    return Pipeline([(cls.role, step), ("head", LogisticHead(max_iter=200))]).fit(X, y), X


def _head(cls, digits, tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    X, y = digits
    head = cls(RandomForestClassifier(n_estimators=5, random_state=0)) if cls.kind == "sklearn" else cls()
    return Pipeline([("head", head.fit(X, y))]), X


def _featurizer(cls, digits, tmp_path):
    if cls().modality == "text":
        source = load_source(REPO / "examples" / "reviews.csv", text_column="review", label_column="department")
    else:
        source = load_image_folder(_images(tmp_path))
    model = Pipeline([("features", cls(cache=str(tmp_path / "cache")) if "cache" in cls().get_params() else cls()),
                      ("head", LogisticHead())])
    return model.fit(source.items, source.labels), source.items


def _model(cls, digits, tmp_path):
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.finetune.train import finetune_source

    source = load_image_folder(_images(tmp_path))
    config = FinetuneConfig(backbone="tiny_cnn", strategy="full", epochs=1, image_size=32, batch_size=8)
    finetune_source(source, config, tmp_path / "trained", progress=False)
    tuned = load_model(tmp_path / "trained")
    if cls.kind != "ensemble":
        return tuned, source.items
    from transfuse.featurizers.extractor import FeatureExtractor

    tuned.tta = True  # the mirrored image's probabilities are averaged in: saved with the member
    probe = Pipeline([("features", FeatureExtractor("tiny_cnn", cache=str(tmp_path / "cache"))),
                      ("head", LogisticHead())]).fit(source.items, source.labels)
    return cls([probe, tuned], weights=[1, 3], labels=["probe", "fine-tuned"]), source.items


def _images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for cls in ("bag", "sandal", "trouser"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((REPO / "examples" / "fashion" / cls).glob("*.png"))[:8]:
            shutil.copy(src, root / cls / src.name)
    return root


FIT = {"fusion": _step, "selection": _step, "head": _head, "featurizer": _featurizer, "model": _model}


def test_every_role_has_a_harness():
    assert set(FIT) == set(ROLES)


@pytest.mark.parametrize("kind", sorted(part_kinds()))
def test_every_part_kind_roundtrips_exactly(kind, digits, tmp_path):
    cls = part_kinds()[kind]
    model, X = FIT[cls.role](cls, digits, tmp_path)
    parts = model.steps if isinstance(model, Pipeline) else [("model", model)]
    assert any(part.kind == kind and isinstance(part, Part) for _, part in parts)
    before = _scores(model, X)
    out = save_model(model, tmp_path / "saved")
    loaded = load_model(out)
    np.testing.assert_array_equal(_scores(loaded, X), before)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    config = json.loads((out / "config.json").read_text())
    assert [p["kind"] for p in config["parts"]] == [part.kind for _, part in parts]
    for _, part in parts:  # the protocol itself, without the disk
        arrays, meta = part.get_state()
        json.dumps(meta)  # meta is JSON
        again = type(part).from_state(arrays, json.loads(json.dumps(meta)))
        assert type(again) is type(part)


def _scores(model, X) -> np.ndarray:
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.decision_function(X)


@pytest.mark.parametrize("folder", sorted(str(p.relative_to(LEGACY)) for p in LEGACY.glob("v*/*")))
def test_models_of_every_older_format_load_and_predict_what_they_predicted(folder):
    """Saved by transfuse in formats 1-3 (tests/data/legacy/make_fixtures.py), among them a scalar-mix
    fusion that format 3 itself could not load back."""
    expected = json.loads((LEGACY / folder / "expected.json").read_text())
    items = [str(REPO / p) for p in expected["inputs"]] if expected["input_kind"] == "paths" else expected["inputs"]
    model = load_model(LEGACY / folder, cache=False)
    np.testing.assert_allclose(model.predict_proba(items), expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_a_part_kind_this_installation_does_not_know_is_a_clear_error(tmp_path, digits):
    X, y = digits
    out = save_model(Pipeline([("head", LogisticHead(max_iter=200).fit(X, y))]), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config["parts"][0]["kind"] = "forest"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="kind 'forest'.*install the plugin that provides it"):
        load_model(out)


def test_save_model_refuses_what_is_not_a_part(tmp_path, digits):
    from sklearn.preprocessing import StandardScaler

    X, y = digits
    with pytest.raises(ModelDirError, match="'scale' is not one"):
        save_model(Pipeline([("scale", StandardScaler()), ("head", LogisticHead(max_iter=200))]).fit(X, y), tmp_path / "m")


class _Foreign(ClassifierMixin, BaseEstimator):  # a classifier of the user's own: loading it would run their code
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.repeat(self.classes_[:1], len(X))


def test_any_sklearn_classifier_is_saved_without_pickle_and_foreign_ones_are_refused(tmp_path, digits):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = digits
    model = Pipeline([("head", HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y))])
    loaded = load_model(save_model(model, tmp_path / "m"))  # wrapped in the sklearn part, stored by skops
    assert loaded.kind == "sklearn"  # a one-step pipeline loads as its part
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in (tmp_path / "m").iterdir())
    with pytest.raises(ModelDirError, match="_Foreign cannot be saved safely.*neither a scikit-learn estimator.*logreg"):
        save_model(Pipeline([("head", _Foreign().fit(X, y))]), tmp_path / "f")
    assert not (tmp_path / "f").exists()


def _crafted_skops(marker: Path) -> bytes:
    """A skops file whose ``solver`` is a call to a scikit-learn *function* that runs a script: what
    a model folder from a stranger could hold."""
    import io
    import zipfile

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X, y = np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
    src = zipfile.ZipFile(io.BytesIO(sio.dumps(LogisticRegression().fit(X, y))))
    schema = json.loads(src.read("schema.json"))
    script = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')"
    text = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(script),
            "is_json": True}
    schema["content"]["content"]["solver"] = {
        "__class__": "assert_run_python_script_without_output", "__module__": "sklearn.utils._testing",
        "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": [text]}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, json.dumps(schema) if name == "schema.json" else src.read(name))
    return out.getvalue()


def test_a_crafted_sklearn_head_is_refused_before_anything_runs(tmp_path):
    from transfuse.sklearn_head import SklearnHead

    marker = tmp_path / "ran"
    crafted = np.frombuffer(_crafted_skops(marker), np.uint8).copy()
    with pytest.raises(ModelDirError, match="not trusted.*assert_run_python_script_without_output"):
        SklearnHead.from_state({"skops": crafted}, {"estimator": "sklearn.linear_model.LogisticRegression"})
    assert not marker.exists()


def test_sklearn_heads_without_probabilities_load_and_predict(tmp_path, digits):
    from sklearn.svm import LinearSVC

    X, y = digits
    model = Pipeline([("head", LinearSVC().fit(X, y))])
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert not hasattr(loaded, "predict_proba")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
