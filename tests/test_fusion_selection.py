"""Fusion and selection steps: sklearn contract, what they keep, no leakage, exact round trip."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from transfuse.errors import DataError
from transfuse.fusion import ConcatFusion, GatedFusion, ScalarMixFusion, WeightedFusion, make_fusion
from transfuse.heads import LogisticHead
from transfuse.recipe import Recipe
from transfuse.search import default_recipes, search
from transfuse.selection import (
    KBestSelector,
    L1Selector,
    PCAReducer,
    VarianceSelector,
    group_lasso_blocks,
    parse_select,
)

STEPS = [ConcatFusion(), WeightedFusion(max_epochs=20), GatedFusion(max_epochs=20), ScalarMixFusion(max_epochs=20),
         PCAReducer(0.9),
         VarianceSelector(), KBestSelector(k=2), L1Selector(C=1.0)]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: type(s).__name__)
def test_sklearn_estimator_checks(step):
    check_estimator(step)


def blocky_digits(seed: int = 0):
    """Digits pixels as an informative 64-wide block, plus two blocks of pure noise."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    noise_a, noise_b = rng.normal(size=(len(X), 20)), rng.normal(size=(len(X), 200))
    blocks = {"noise_a": [0, 20], "pixels": [20, 84], "noise_b": [84, 284]}
    return np.hstack([noise_a, X, noise_b]).astype(np.float32), y, blocks


def test_group_lasso_keeps_the_informative_block():
    X, y, blocks = blocky_digits()
    Z = (X - X.mean(0)) / (X.std(0) + 1e-9)
    pairs = [(n, slice(a, b)) for n, (a, b) in blocks.items()]
    report = group_lasso_blocks(Z[:600], y[:600], pairs, budget=1)
    assert report["kept"] == ["pixels"]
    fused = ConcatFusion(blocks=blocks, select_blocks=1).fit(X[:600], y[:600])
    assert list(fused.meta_["kept_blocks"]) == ["pixels"] and fused.transform(X).shape == (len(X), 64)


def test_concat_balances_blocks_of_different_width():
    X, y, blocks = blocky_digits()
    Z = ConcatFusion(blocks=blocks).fit_transform(X)
    per_block = [Z[:, slice(*[int(v) - (0) for v in blocks[n]])].var(0).sum() for n in blocks]
    assert np.allclose(per_block, per_block[0], rtol=0.05)


@pytest.mark.parametrize("kind", ["weighted", "mlp"])
def test_learned_fusions_learn_and_report_block_weights(kind):
    X, y, blocks = blocky_digits()
    model = Pipeline([("fusion", make_fusion(kind, blocks, width=64)), ("head", LogisticHead())])
    model.fit(X[:1200], y[:1200])
    assert model.score(X[1200:], y[1200:]) > 0.8
    meta = model[0].meta_
    weights = meta["block_weights"] if kind == "weighted" else meta["mean_gates"]
    assert max(weights, key=weights.get) == "pixels"


def test_scalar_mix_weights_same_width_layers():
    """Like a transformer's hidden layers: three 64-wide blocks, one informative."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    Xb = np.hstack([rng.normal(size=X.shape), X, rng.normal(size=X.shape)]).astype(np.float32)
    blocks = {"layer.1": [0, 64], "layer.2": [64, 128], "features": [128, 192]}
    fusion = make_fusion("scalar-mix", blocks).fit(Xb[:1200], y[:1200])
    weights = fusion.meta_["block_weights"]
    assert max(weights, key=weights.get) == "layer.2" and fusion.transform(Xb).shape == (len(X), 64)
    assert any(r.fusion == "scalar-mix" for r in default_recipes(blocks))
    X2, y2, mixed = blocky_digits()
    with pytest.raises(DataError, match="mixes layers of one width"):
        make_fusion("scalar-mix", mixed).fit(X2, y2)
    assert not any(r.fusion == "scalar-mix" for r in default_recipes(mixed))


def test_use_restricts_blocks_and_unknown_names_fail():
    X, y, blocks = blocky_digits()
    assert ConcatFusion(blocks=blocks, use=["pixels"]).fit_transform(X, y).shape[1] == 64
    with pytest.raises(DataError, match="no block named nope"):
        ConcatFusion(blocks=blocks, use=["nope"]).fit(X, y)
    with pytest.raises(DataError, match="do not tile|covers"):
        ConcatFusion(blocks={"a": [0, 10]}).fit(X, y)


def test_parse_select_and_bad_specs():
    budget, steps = parse_select("group-lasso:3, pca:0.9, kbest:100:mutual_info, l1:0.5, variance")
    assert budget == 3 and [s.kind for s in steps] == ["pca", "kbest", "l1", "variance"]
    assert steps[1].score_func == "mutual_info"
    with pytest.raises(DataError, match="unknown selection 'lasso'"):
        parse_select("lasso:2")
    with pytest.raises(DataError, match="bad selection"):
        parse_select("pca:lots")
    with pytest.raises(DataError, match="unknown fusion"):
        Recipe(fusion="attention").validate()


def test_selection_steps_report_what_they_kept():
    X, y, _ = blocky_digits()
    pca = PCAReducer(0.9).fit(X[:, 20:84])
    assert pca.meta_["explained_variance"] >= 0.9 and pca.meta_["n_features_out"] < 64
    kb = KBestSelector(k=10).fit(X, y)
    assert kb.meta_["n_features_out"] == 10 and all(20 <= i < 84 for i in kb.state_["index"])
    assert VarianceSelector().fit(X).meta_["n_features_out"] < X.shape[1]  # digits has constant pixels


def test_fit_never_sees_the_test_split(image_folder, tmp_path):
    """Leakage check: replacing every test-split image changes no fitted number."""
    import shutil

    from transfuse.data import load_image_folder, split_source
    from transfuse.workflow import fit_source

    def fitted(folder, cache):
        res = fit_source(load_image_folder(folder), backbone="tiny_cnn", layers="blocks.1,features",
                         select="group-lasso:1,pca:0.9", cache=str(tmp_path / cache), save=False)
        return res.model

    a = fitted(image_folder, "c1")
    src = load_image_folder(image_folder)
    _, test = split_source(src, test_size=0.2, seed=0)
    from PIL import Image

    donor = sorted((image_folder / "bag").glob("*.png"))
    for k, i in enumerate(test):  # every test image becomes another picture (each one of a kind)
        pixels = np.roll(np.asarray(Image.open(donor[(k + 3) % len(donor)])), k + 1, axis=1)
        Image.fromarray(pixels).save(src.items[i] + ".png")
    for i in test:
        shutil.move(src.items[i] + ".png", src.items[i])
    b = fitted(image_folder, "c2")
    for (name, x), (_, y) in zip(a.steps[1:], b.steps[1:]):
        for key in x.state_:
            np.testing.assert_array_equal(x.state_[key], y.state_[key], err_msg=f"{name}.{key}")


def test_concat_balance_survives_the_head():
    X, y, blocks = blocky_digits()
    steps = Recipe(fusion="concat").build(blocks)
    assert steps[-1][1].standardize is False  # the head must not undo the per-block scaling
    model = Pipeline(steps).fit(X[:600], y[:600])
    plain = LogisticHead().fit(X[:600], y[:600])
    assert not np.allclose(model.predict_proba(X[600:]), plain.predict_proba(X[600:]), atol=1e-3)


def test_selection_specs_are_checked_before_fitting():
    for bad in ("pca:0", "pca:1.5", "l1:0", "kbest:-3", "kbest:10:chi2", "group-lasso:0"):
        with pytest.raises(DataError, match="bad selection"):
            parse_select(bad)
    with pytest.raises(DataError, match="fitted with labels"):
        KBestSelector(k=2).fit(np.random.rand(10, 4))


@pytest.mark.slow
def test_search_is_deterministic_and_prefers_the_informative_block():
    X, y, blocks = blocky_digits()
    idx = np.random.default_rng(0).choice(len(X), 400, replace=False)
    recipes = default_recipes(blocks)
    r1 = search(X[idx], y[idx], blocks, recipes, cv=3, seed=0, n_jobs=2)
    r2 = search(X[idx], y[idx], blocks, recipes, cv=3, seed=0, n_jobs=1)
    assert [r["candidate"] for r in r1.rows] == [r["candidate"] for r in r2.rows]  # same order, same winner
    assert [r["cv_score"] for r in r1.rows] == [r["cv_score"] for r in r2.rows]
    singles = [r for r in r1.rows if r["single_layer"]]
    assert singles[0]["recipe"].layers == ("pixels",)
    assert "over the runner-up" in r1.reason
