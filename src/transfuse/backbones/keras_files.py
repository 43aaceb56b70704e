"""Reading Keras weight files as plain arrays (h5py; no Keras, no TensorFlow, nothing executed).

Three layouts are read, all HDF5:
- Keras 2 / ``keras.applications`` files (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``) and
  whole models saved as ``.h5``: layers in the order of the ``layer_names`` attribute (under
  ``model_weights`` for a whole model), each layer's arrays in the order of its ``weight_names``;
- Keras 3 ``.weights.h5``: ``.../vars/0``, ``.../vars/1`` groups, taken in the natural order of their
  paths (``conv2d`` < ``conv2d_1`` < ... < ``conv2d_10``), which is the order the layers were built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from transfuse.errors import WeightsUnavailableError


@dataclass(frozen=True)
class KerasLayerWeights:
    """One layer's arrays in Keras order (a convolution: kernel ``(kh, kw, in, out)``, then bias)."""

    name: str
    arrays: tuple[np.ndarray, ...]


def _natural(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def read_keras_h5(path: str) -> list[KerasLayerWeights]:
    """Every layer with weights, in the order the network applies them."""
    try:
        import h5py
    except ImportError:
        raise WeightsUnavailableError("reading Keras .h5 weight files needs h5py: pip install 'transfuse[keras]'") from None
    try:
        with h5py.File(path, "r") as fh:
            root = fh["model_weights"] if "model_weights" in fh else fh
            if "layer_names" in root.attrs:
                return _by_layer_names(root)
            return _by_vars_groups(root)
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsUnavailableError(f"cannot read Keras weights file {path}: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _by_layer_names(root) -> list[KerasLayerWeights]:
    layers = []
    for name in map(_text, root.attrs["layer_names"]):
        group = root[name]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        if names:
            layers.append(KerasLayerWeights(name, tuple(np.asarray(group[n]) for n in names)))
    return layers


def _by_vars_groups(root) -> list[KerasLayerWeights]:
    found: list[str] = []
    root.visit(lambda p: found.append(p) if p.endswith("/vars") or p == "vars" else None)
    layers = []
    for vars_path in sorted(found, key=_natural):
        group = root[vars_path]
        keys = sorted(group.keys(), key=int)
        if keys:
            layers.append(KerasLayerWeights(vars_path.rsplit("/vars", 1)[0] or vars_path,
                                            tuple(np.asarray(group[k]) for k in keys)))
    return layers


def conv_stack(path: str, expected: list[tuple[int, int, int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 3x3 convolutions of ``path`` as ``(kernel OIHW, bias)``, checked to be exactly ``expected``
    (``(out, in, 3, 3)`` per layer, in order). Other arrays (1x1 side outputs, dense layers of a
    classifier top) are not part of the stack and are ignored; a missing, extra or differently shaped
    3x3 convolution is an error naming the first mismatch."""
    convs = [(layer.name, layer.arrays) for layer in read_keras_h5(path)
             if layer.arrays and layer.arrays[0].ndim == 4 and layer.arrays[0].shape[:2] == (3, 3)]
    got = [tuple(np.transpose(a[0], (3, 2, 0, 1)).shape) for _, a in convs]
    if got != expected:
        first = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
        what = (f"layer {first + 1} ({convs[first][0]}) is {got[first]}, expected {expected[first]}"
                if first < min(len(got), len(expected)) else f"it has {len(got)} 3x3 convolutions, expected {len(expected)}")
        raise WeightsUnavailableError(f"Keras weights file {path} does not fit this architecture: {what}; check --backbone")
    out = []
    for _, arrays in convs:
        if len(arrays) < 2:
            raise WeightsUnavailableError(f"Keras weights file {path}: a convolution without a bias is not a VGG layer")
        out.append((np.ascontiguousarray(np.transpose(arrays[0], (3, 2, 0, 1))), np.asarray(arrays[1])))
    return out
