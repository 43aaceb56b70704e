"""Extending transfuse by adding one file: the worked example of docs/extending.md
(examples/plugin/transfuse_example_plugin.py: a backbone, a selection step and a head), installed
the way a distribution installs it (a .dist-info folder with entry points) and used from the CLI."""

import json
import os

import pytest

from conftest import REPO, cli

PLUGIN = REPO / "examples" / "plugin"


@pytest.fixture
def plugin_env(tmp_path) -> dict:
    """What `pip install` of a plugin distribution leaves: metadata naming its entry points."""
    site = tmp_path / "site"
    info = site / "transfuse_example_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: transfuse-example-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[transfuse.backbones]\nexample = transfuse_example_plugin\n\n"
                                           "[transfuse.parts]\nexample = transfuse_example_plugin\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)])}


def test_a_plugin_adds_a_backbone_a_step_and_a_head(tmp_path, image_folder, plugin_env):
    listed = cli("backbones", "--json", env=plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert "edges" in {row["name"] for row in json.loads(listed.stdout)}
    taps = cli("layers", "edges", "--json", env=plugin_env)
    assert [row["name"] for row in json.loads(taps.stdout)] == ["edges", "features"]
    model = tmp_path / "m"
    fit = cli("-q", "fit", str(image_folder), "--backbone", "edges", "--layers", "edges,features",
              "--select", "randproj:8", "--head", "centroid", "--out", str(model), "--json",
              env={**plugin_env, "TRANSFUSE_CACHE": str(tmp_path / "cache")})
    assert fit.returncode == 0, fit.stderr
    assert json.loads(fit.stdout)["accuracy"] > 0.5  # 3 classes: chance is 0.33
    kinds = [p["kind"] for p in json.loads((model / "config.json").read_text())["parts"]]
    assert kinds == ["extractor", "concat", "randproj", "centroid"]
    again = cli("-q", "predict", str(model), str(image_folder / "bag"), "--json", env=plugin_env)
    assert again.returncode == 0, again.stderr
    assert len(json.loads(again.stdout)) == 8
    without = cli("-q", "predict", str(model), str(image_folder / "bag"))  # the plugin is not installed here
    assert without.returncode == 2 and "install the plugin that provides it" in without.stderr


def test_a_broken_plugin_is_reported_and_left_out(tmp_path, plugin_env):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "transfuse_example_plugin.py").write_text("raise ImportError('needs a library that is not here')\n")
    env = {"PYTHONPATH": plugin_env["PYTHONPATH"].replace(str(PLUGIN), str(broken))}
    run = cli("backbones", "--json", env=env)
    assert run.returncode == 0 and "efficientnet_lite0" in run.stdout
    assert "could not be loaded" in run.stderr and "needs a library that is not here" in run.stderr
