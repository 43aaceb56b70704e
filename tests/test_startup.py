"""What a new ``transfuse`` process imports for the one-shot commands: the listing commands and a
prediction from cached features (or on an exported ONNX graph) never import torch."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES

HEAVY = ("torch", "timm", "torchvision", "transformers", "lightning", "ray")
CODE = "import sys; from transfuse.cli import main; sys.argv = ['transfuse'] + sys.argv[1:]; main()"


def _imports(*args: str, env: dict | None = None) -> set[str]:
    """The heavy top-level packages a cold ``transfuse ARGS`` process imported."""
    import os

    r = subprocess.run([sys.executable, "-X", "importtime", "-c", CODE, *args], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return {name for name in names if name in HEAVY}


def test_help_version_and_listing_commands_import_no_torch(tmp_path):
    env = {"TRANSFUSE_CACHE": str(tmp_path / "c")}
    for args in (["--help"], ["--version"], ["layers", "efficientnet_lite0"], ["cache", "ls"]):
        assert _imports(*args, env=env) == set(), args


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A probe on EfficientNet-Lite0 features of the bundled examples (a real backbone, fp32)."""
    from transfuse.data import load_image_folder
    from transfuse.workflow import fit_source

    out = tmp_path_factory.mktemp("startup") / "m"
    fit_source(load_image_folder(EXAMPLES), out_dir=out, precision="fp32")
    return out


def test_predicting_from_cached_features_imports_no_torch(model):
    image = str(sorted(EXAMPLES.glob("bag/*.png"))[0])
    assert _imports("-q", "predict", str(model), image) == set()


@pytest.mark.slow
def test_a_new_image_on_the_onnx_engine_imports_no_torch(model, tmp_path):
    for i in range(2):  # the first run may export and check the graph (torch); the next one only runs it
        image = tmp_path / f"new{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 60, 3), np.uint8)).save(image)
        seen = _imports("-q", "predict", str(model), str(image), "--runtime", "onnx")
    assert seen == set()
