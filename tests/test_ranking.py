"""`transfuse rank` and transfuse.ranking.rank: candidates from the cache, scores, spreads, ranks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from transfuse.data import load_source
from transfuse.errors import DataError
from transfuse.ranking import rank

from conftest import cli

REVIEWS = Path(__file__).parents[1] / "examples" / "reviews.csv"


def test_rank_orders_backbones_and_taps_on_real_weights(image_folder, tmp_path, cache_dir):
    """Lite0's ImageNet features against the tiny test CNN on real Fashion-MNIST images: the pretrained
    network's best tap comes first, every tap and the fused set is a candidate, LEEP/NCE read the
    logits, and the records are what --json prints and --out keeps."""
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("rank", str(image_folder), "--backbones", "efficientnet_lite0,tiny_cnn", "--score", "logme,knn,leep",
            "--resamples", "3", "--out", str(tmp_path / "r"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows == json.loads((tmp_path / "r" / "ranking.json").read_text())
    report = (tmp_path / "r" / "report.html").read_text()  # the ranking table, each score with its spread
    assert "Which source? The ranking" in report and "± " in report and "efficientnet_lite0" in report
    assert rows[0]["backbone"].startswith("efficientnet_lite0")
    assert [row["rank"] for row in rows] == sorted(row["rank"] for row in rows)
    lite = {row["layer"] for row in rows if row["backbone"] == "efficientnet_lite0"}
    assert {"stem", "blocks.6", "features", "logits", "fused"} <= lite
    pair = [row for row in rows if row["backbone"] == "efficientnet_lite0,tiny_cnn"]  # the two best, fused
    assert len(pair) == 1 and pair[0]["layer"].startswith("efficientnet_lite0:") and ",tiny_cnn:" in pair[0]["layer"]
    assert set(pair[0]["scores"]) == {"logme", "knn"}  # no source head for the pair: no LEEP
    assert all(set(row["scores"]) == {"logme", "knn", "leep"} and set(row["spread"]) == set(row["scores"])
               for row in rows if row is not pair[0])  # both backbones have logits: LEEP for every candidate
    again = cli("rank", str(image_folder), "--backbones", "efficientnet_lite0,tiny_cnn", env=env)
    assert again.returncode == 0 and "0 extracted" in again.stderr  # from the cache
    assert "best: efficientnet_lite0" in again.stdout


def test_a_ranked_candidate_names_its_layers():
    from transfuse.backbones import get_spec
    from transfuse.workflow.fit import _chosen_layers

    assert _chosen_layers("efficientnet_lite0", "blocks.5") == ["blocks.5"]
    assert _chosen_layers("efficientnet_lite0", "fused") == get_spec("efficientnet_lite0").tap_names
    pair = _chosen_layers("efficientnet_lite0,tiny_cnn", "efficientnet_lite0:features,tiny_cnn:fused")
    assert pair == ["efficientnet_lite0:features", *(f"tiny_cnn:{t}" for t in get_spec("tiny_cnn").tap_names)]


def test_text_ranking_includes_the_tfidf_baseline(caplog):
    source = load_source(REVIEWS, text_column="review", label_column="department")
    keep = [i for i, label in enumerate(source.labels) if label in ("Tops", "Dresses")][:60]
    items, labels = [source.items[i] for i in keep], [source.labels[i] for i in keep]
    with caplog.at_level(logging.INFO, logger="transfuse.ranking"):
        rows = rank(items, labels, ["tiny_text", "tfidf"], layers=["features"], score="logme,knn", resamples=2,
                    cache=False, progress=False)
    assert {(r["backbone"], r["layer"]) for r in rows} == {("tiny_text", "features"), ("tfidf", "tfidf")}
    assert "truncated SVD" in caplog.text  # the reduction of sparse TF-IDF is said, not silent


def test_rank_errors_are_clear(image_folder, cache_dir):
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("rank", str(image_folder), "--backbones", "tiny_cnn", "--score", "logme,bogus", env=env)
    assert r.returncode == 2 and "unknown score 'bogus'" in r.stderr
    r = cli("rank", str(image_folder), "--backbones", "tiny_cnn", "--layers", "nope", env=env)
    assert r.returncode == 2 and "has no layer 'nope'" in r.stderr
    with pytest.raises(DataError, match="different kinds of data"):
        rank(["a.png", "b.txt"], ["x", "y"], ["tiny_cnn", "tfidf"])


@pytest.mark.slow
def test_fit_backbone_auto_ranks_within_the_budget_and_says_why(image_folder, tmp_path, cache_dir):
    """--backbone auto with a budget (50 ms) that only lets the first (smallest) backbone run: it still
    chooses, trains and records the choice, the ranking and what the budget left out."""
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("fit", str(image_folder), "--backbone", "auto", "--budget", "0.05s", "--out", str(tmp_path / "m"), "--json",
            env=env)
    assert r.returncode == 0, r.stderr
    choice = json.loads(r.stdout)["source_choice"]
    assert choice["backbone"] == "efficientnet_lite0" and "best combined rank under logme, knn" in choice["why"]
    assert choice["ranking"][0]["layer"] == choice["layer"] and "dinov2_vits14" in choice["skipped"]
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["source_choice"] == choice
    one = str(next((image_folder / "bag").glob("*.png")))
    assert cli("predict", str(tmp_path / "m"), one, env=env).returncode == 0
    for bad in ("0", "soon"):
        r = cli("fit", str(image_folder), "--backbone", "auto", "--budget", bad, env=env)
        assert r.returncode == 2 and "--budget" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_fit_auto_without_a_backbone_ranks_then_searches_the_layers(image_folder, tmp_path, cache_dir):
    """--auto alone chooses the source by ranking, then searches that backbone's layers; the features
    of the training items come from the ranking's extraction (the same engine), not a second one."""
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("fit", str(image_folder), "--auto", "--cv", "2", "--budget", "0.05s", "--out", str(tmp_path / "m"),
            "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["source_choice"]["backbone"] == "efficientnet_lite0" and "searches its layers" in out["source_choice"]["why"]
    assert out["search"] and len(out["search"]) > 1  # layers x fusion x selection x C were tried
    last = [line for line in r.stderr.splitlines() if "features:" in line and "from cache" in line][-1]
    assert int(last.split(" from cache")[0].rsplit(" ", 1)[1]) >= out["split"]["train"]
