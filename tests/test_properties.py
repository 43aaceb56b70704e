"""Property-based tests (Hypothesis): whatever a manifest, a text table or a model's config.json
holds, reading it gives the rows back or one clear error; the split is stratified, deterministic and
never puts an item in both parts."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transfuse.data import load_manifest, split_source
from transfuse.data.source import Source
from transfuse.data.text import load_text_table
from transfuse.errors import DataError, TransfuseError

from conftest import EXAMPLES

SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 60)),  # more: HYPOTHESIS_EXAMPLES=1000
                    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cell = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
label = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x2FF), min_size=1, max_size=8)
text = st.tuples(cell, st.characters(whitelist_categories=("L", "N")), cell).map("".join)  # never blank


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@SETTINGS
@given(st.lists(st.tuples(cell, cell, st.sampled_from(["", "train", "test", "val"])), min_size=0, max_size=12),
       st.booleans())
def test_manifest_reads_back_its_rows_or_says_why(rows, with_split):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        header = ["path", "label", "split"] if with_split else ["path", "label"]
        path.write_text(_csv([header, *[list(r[: len(header)]) for r in rows]]), encoding="utf-8")
        try:
            source = load_manifest(path)
        except DataError:
            return  # empty cells, unknown splits, no rows...: one clear error
        assert len(source) == len(rows)
        assert source.labels == [r[1].strip() for r in rows]
        assert all(Path(item).is_absolute() or Path(item).parent == Path(tmp) for item in source.items)


@SETTINGS
@given(st.lists(st.tuples(text, label), min_size=1, max_size=12), st.sampled_from([".csv", ".jsonl"]))
def test_text_tables_keep_every_text_exactly(rows, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        if suffix == ".csv":
            path.write_text(_csv([["text", "label"], *map(list, rows)]), encoding="utf-8")
        else:
            path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), encoding="utf-8")
        source = load_text_table(path)
        assert source.items == [t for t, _ in rows]
        assert source.labels == [lab.strip() for _, lab in rows]


@SETTINGS
@given(st.lists(st.integers(2, 15), min_size=2, max_size=5), st.randoms(), st.floats(0.05, 0.95),
       st.integers(0, 2**16))
def test_split_is_stratified_deterministic_and_disjoint(sizes, order, test_size, seed):
    labels = [cls for cls, n in zip("abcde", sizes) for _ in range(n)]
    order.shuffle(labels)
    counts = {c: labels.count(c) for c in set(labels)}
    source = Source(items=[f"item {i}" for i in range(len(labels))], labels=labels, name="p", kind="text")
    train, test = split_source(source, test_size=test_size, seed=seed)
    assert (train, test) == split_source(source, test_size=test_size, seed=seed)
    assert not set(train) & set(test) and sorted(train + test) == list(range(len(labels)))
    for cls, n in counts.items():
        in_test = sum(labels[i] == cls for i in test)
        assert 1 <= in_test <= n - 1  # every class on both sides
        assert abs(in_test - test_size * n) <= 1  # the asked share, to one item


@SETTINGS
@given(st.lists(st.sampled_from("abc"), min_size=6, max_size=20), st.data())
def test_repeated_texts_never_sit_in_both_splits(labels, data):
    texts = [data.draw(st.sampled_from(["one", "two", "three", "four", "five", "six"])) + f" {lab}"
             for lab in labels]
    source = Source(items=texts, labels=labels, name="p", kind="text")
    try:
        train, test = split_source(source, test_size=0.3)
    except DataError:
        return  # after dropping copies a class may be too small: said so
    assert not {texts[i] for i in train} & {texts[i] for i in test}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    from transfuse.data import load_image_folder
    from transfuse.workflow import fit_source

    root = tmp_path_factory.mktemp("prop")
    for cls in ("bag", "sandal"):
        shutil.copytree(EXAMPLES / cls, root / "data" / cls)
    fit_source(load_image_folder(root / "data"), backbone="tiny_cnn", layers="blocks.1,features", fusion="concat",
               select="pca:0.9", cache=str(root / "cache"), out_dir=root / "m")
    return root / "m"


json_value = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | cell,
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cell, inner, max_size=3),
                          max_leaves=6)


def _paths(value, prefix=()):
    """Every path into a JSON document (to pick one to change)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@SETTINGS
@given(st.data())
def test_any_change_to_a_config_loads_or_is_a_clear_error(saved_model, data):
    from transfuse.pipeline import load_model

    config = json.loads((saved_model / "config.json").read_text())
    where = data.draw(st.sampled_from([p for p in _paths(config) if p]))
    changed = json.loads(json.dumps(config))
    target = changed
    for key in where[:-1]:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[where[-1]]
    else:
        target[where[-1]] = data.draw(json_value)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "m"
        shutil.copytree(saved_model, copy)
        (copy / "config.json").write_text(json.dumps(changed))
        try:
            model = load_model(copy, cache=False)
        except TransfuseError:
            return  # ModelDirError and friends: one clear line on the command line
        items = [str(p) for p in sorted((EXAMPLES / "bag").glob("*.png"))[:2]]
        try:
            assert len(model.predict(items)) == 2
        except TransfuseError:
            pass  # a changed layout or setting that only shows when features flow: still one clear line
