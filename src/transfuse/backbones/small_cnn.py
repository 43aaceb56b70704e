"""``small_cnn``: the textbook source network, ``Input -> Conv1 -> Pool1 -> Conv2 -> Pool2 -> Flatten ->
Dense``, to train on a source task (``transfuse train-source DATA --arch small-cnn``) and transfer from.

Its taps carry those names; ``logits`` is the source task's output layer after ``Dense`` (the one
fine-tuning replaces). Convolutions are 3x3 without padding (Keras's default) and ReLU follows each
convolution and ``Dense``. ``Flatten -> Dense`` fixes the input size: ``small_cnn`` reads 28 px
images (MNIST-like), ``small_cnn@N`` reads N px ones. The network: :mod:`transfuse.backbones.nets.small_cnn`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.weights import architecture_only
from transfuse.errors import UnknownBackboneError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

NAME, PREFIX = "small_cnn", "small_cnn@"
SIZE = 28
MAX_SIZE = 512  # Flatten -> Dense grows with the square of the size
WIDTHS = (32, 64)  # Conv1, Conv2
DENSE = 128
TAPS = (("Conv1", "conv1"), ("Pool1", "pool1"), ("Conv2", "conv2"), ("Pool2", "pool2"), ("Flatten", "flatten"),
        ("Dense", "dense"))


def _side(size: int) -> int:
    """Spatial side after Conv2 -> Pool2."""
    return ((size - 2) // 2 - 2) // 2


def _tap_specs(size: int) -> tuple[TapSpec, ...]:
    c1, p1 = size - 2, (size - 2) // 2
    c2, p2 = p1 - 2, _side(size)
    shapes = ((WIDTHS[0], c1, c1), (WIDTHS[0], p1, p1), (WIDTHS[1], c2, c2), (WIDTHS[1], p2, p2),
              (WIDTHS[1] * p2 * p2,), (DENSE,))
    return (*(TapSpec(name, depth, shape) for depth, ((name, _), shape) in enumerate(zip(TAPS, shapes))),
            TapSpec("logits", len(TAPS), (10,)))


@functools.lru_cache(maxsize=8)
def small_cnn_spec(size: int = SIZE) -> BackboneSpec:
    """The spec at ``size`` px (at least 10: Conv2 needs a map to work on)."""
    if not 10 <= size <= MAX_SIZE:
        raise UnknownBackboneError(f"small_cnn reads images of 10 to {MAX_SIZE} px, got {size}")
    name = NAME if size == SIZE else f"{PREFIX}{size}"
    input_spec = InputSpec(size=size, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")

    def build(pretrained: bool) -> Backbone:
        from transfuse.backbones.nets.base import Backbone, TapPoint
        from transfuse.backbones.nets.small_cnn import SmallCNN

        if pretrained:
            architecture_only(name, "small-cnn")()
        taps = [TapPoint(tap, module, depth) for depth, (tap, module) in enumerate(TAPS)]
        return Backbone(name=name, weights_id="", input_spec=input_spec, model=SmallCNN(size, WIDTHS, DENSE),
                        taps=[*taps, TapPoint("logits", "logits", len(TAPS))], default_taps=("Dense",))

    flat = WIDTHS[1] * _side(size) ** 2
    params = 3 * 9 * WIDTHS[0] + WIDTHS[0] + WIDTHS[0] * 9 * WIDTHS[1] + WIDTHS[1] + flat * DENSE + DENSE + DENSE * 10 + 10
    return BackboneSpec(name=name, build=build, input_spec=input_spec, taps=_tap_specs(size),
                        weights=WeightsSource(id=f"{name}:none", origin="none (architecture only)",
                                              get="train it: transfuse train-source DATA --arch small-cnn",
                                              locate=architecture_only(name, "small-cnn")),
                        family="small-cnn", description=f"Conv1-Pool1-Conv2-Pool2-Flatten-Dense at {size}px, to train "
                        f"on a source task", license="none", params=params, offline=False, default_taps=("Dense",),
                        extra={"fixed_size": True})


def _resolve(name: str) -> BackboneSpec:
    size = name[len(PREFIX):]
    if not size.isdigit():
        raise UnknownBackboneError(f"{name!r}: give the input size in pixels, e.g. small_cnn@64")
    return small_cnn_spec(int(size))


BACKBONES = (small_cnn_spec(SIZE),)
RESOLVERS = {PREFIX: _resolve}
