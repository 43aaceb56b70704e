"""``keras:<path>``: a Keras 3 model file (``.keras``, or a whole model saved as ``.h5``) as a backbone.

Keras runs on its PyTorch backend (``KERAS_BACKEND=torch``; TensorFlow is not needed), where a model
is a ``torch.nn.Module``. Every named layer after the input is a tap; one forward pass of a
``keras.Model`` whose outputs are the requested layers returns them all. Maps come back NHWC and
are turned to NCHW, so pooling treats them like any CNN's.

Pixels: the model gets RGB in [0, 1], or 0-255 when it starts with a ``Rescaling`` or
``Normalization`` layer (it scales them itself); a one-channel model gets the grey level. The
model file's SHA-256 is its weights identity. Loading is
safe mode (no Python lambdas deserialised). Fine-tuning trains a copy of the model with a new
linear output layer on its last layer before the output (:class:`~transfuse.backbones.nets.keras_model.KerasNet`).

Importing this module imports neither Keras nor torch; resolving a ``keras:`` name does (the model is
loaded to read its layers). Loading and running: :mod:`transfuse.backbones.nets.keras_model`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.errors import UnknownBackboneError

PREFIX = "keras:"
SCALING_LAYERS = ("Rescaling", "Normalization")
DEFAULT_SIZE = 224  # for models that take any image size


def _item_shape(shape) -> tuple[int, ...]:
    """A Keras output shape without its batch axis, channels first for maps (``-1``: any size)."""
    dims = tuple(-1 if d is None else int(d) for d in shape[1:])
    return (dims[2], dims[0], dims[1]) if len(dims) == 3 else dims


def _input_contract(model) -> tuple[InputSpec, int]:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 4 or shape[-1] not in (1, 3):
        raise UnknownBackboneError(f"keras: backbones read images (an input of shape (height, width, 1 or 3)); this "
                                   f"model takes {tuple(shape) if shape is not None else 'no defined input'}")
    if shape[1] != shape[2]:
        raise UnknownBackboneError(f"keras: backbones read square images; this model takes {shape[1]}x{shape[2]} "
                                   f"(height x width)")
    size = int(shape[1]) if shape[1] is not None else DEFAULT_SIZE
    scales_itself = any(type(layer).__name__ in SCALING_LAYERS for layer in model.layers[:3])
    std = (1 / 255,) * 3 if scales_itself else (1.0, 1.0, 1.0)
    return InputSpec(size=size, crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=std, interpolation="bilinear"), int(shape[-1])


def keras_spec(name: str) -> BackboneSpec:
    """The spec of ``keras:<path>``: taps and shapes from the model's layers (the model is loaded; again
    when the file changes)."""
    from transfuse.backbones.weights import file_stamp

    path = Path(name[len(PREFIX):]).expanduser()
    if not path.is_file() or path.suffix not in (".keras", ".h5"):
        raise UnknownBackboneError(f"keras: needs a Keras model file (.keras, or a whole model saved as .h5); "
                                   f"{str(path)!r} is {'not a file' if not path.is_file() else 'neither'}")
    return _keras_spec(name, file_stamp(path))


@functools.lru_cache(maxsize=8)
def _keras_spec(name: str, stamp: tuple[str, int, int]) -> BackboneSpec:
    from transfuse.backbones.nets.keras_model import load_keras_model
    from transfuse.backbones.weights import file_digest

    path = Path(stamp[0])
    model = load_keras_model(str(path))
    input_spec, channels = _input_contract(model)
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    taps = tuple(TapSpec(layer.name, depth, _item_shape(layer.output.shape)) for depth, layer in enumerate(layers))
    digest = file_digest(str(path))
    default = (taps[-2].name if len(taps) > 1 else taps[-1].name,)  # before the output layer
    return BackboneSpec(
        name=name, build=lambda pretrained: _build(name, str(path), input_spec, channels, taps, default),
        input_spec=input_spec, taps=taps,
        weights=WeightsSource(id=f"keras-file:{digest}", origin=f"Keras model file {path.name}"),
        family="keras", description=f"Keras model {path.name} ({type(model).__name__}, {len(layers)} layers)",
        license="the model owner's", params=int(model.count_params()), network="keras", default_taps=default)


def _build(name: str, path: str, input_spec: InputSpec, channels: int, taps: tuple[TapSpec, ...],
           default: tuple[str, ...]):
    from transfuse.backbones.nets.keras_model import build_keras

    return build_keras(name, path, input_spec, channels, taps, default)


RESOLVERS = {PREFIX: keras_spec}
