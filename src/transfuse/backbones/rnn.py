"""``gru`` and ``lstm``: recurrent source networks for sequences of feature frames (MFCCs and the like),
to train on a source task (``transfuse train-source DATA --arch gru``) and transfer from.

Two stacked one-layer RNNs (``rnn1``, ``rnn2``, 64 units each) over the item's frames after
per-item mean and variance normalisation; the classifier reads ``rnn2``'s state after the last real
frame. Each RNN layer is a tap whose output is its state at every frame; ``--pooling last`` (the
default) takes the state after the last frame, ``avg`` their mean (``max``, ``meanstd`` too);
``logits`` is the source task's output layer read at every frame (``last``: the network's output).
``gru``/``lstm`` read 13 values per frame (MFCCs); ``gru@N``/``lstm@N`` read N. The network:
:mod:`transfuse.backbones.nets.rnn`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import SequenceSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.weights import architecture_only
from transfuse.errors import UnknownBackboneError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

CELLS = ("gru", "lstm")
WIDTH = 13  # MFCCs
HIDDEN = 64
TAPS = ("rnn1", "rnn2")


def rnn_name(cell: str, width: int) -> str:
    """``gru`` for MFCC-wide frames, ``gru@W`` for others (the name every command takes)."""
    return cell if width == WIDTH else f"{cell}@{width}"


@functools.lru_cache(maxsize=16)
def rnn_spec(cell: str, width: int = WIDTH) -> BackboneSpec:
    """The spec of ``gru``/``lstm`` for ``width`` values per frame."""
    name = rnn_name(cell, width)
    contract = SequenceSpec(width=width)
    taps = (*(TapSpec(t, d, (HIDDEN,)) for d, t in enumerate(TAPS)), TapSpec("logits", len(TAPS), (10,)))

    def build(pretrained: bool) -> Backbone:
        from transfuse.backbones.nets.base import TapPoint
        from transfuse.backbones.nets.rnn import RNNNet, SequenceBackbone

        if pretrained:
            architecture_only(name, cell)()
        return SequenceBackbone(name=name, weights_id="", input_spec=contract, model=RNNNet(cell, width, HIDDEN),
                                taps=[TapPoint(t.name, t.name, t.depth) for t in taps], default_taps=("rnn2",))

    return BackboneSpec(
        name=name, build=build, input_spec=contract, taps=taps,
        weights=WeightsSource(id=f"{name}:none", origin="none (architecture only)",
                              get=f"train it: transfuse train-source DATA --arch {cell}",
                              locate=architecture_only(name, cell)),
        modality="sequence", family=cell, license="none", offline=False, default_taps=("rnn2",),
        description=f"two-layer {cell.upper()} ({HIDDEN} units) over {width}-value frames, to train on a source task",
        params=_params(cell, width))


def _params(cell: str, width: int, classes: int = 10) -> int:
    """Parameters of the network as built: per RNN layer, one input and one recurrent weight matrix
    with a bias each per gate (GRU 3 gates, LSTM 4), then the classifier."""
    gates = 3 if cell == "gru" else 4
    return sum(gates * HIDDEN * (inputs + HIDDEN + 2) for inputs in (width, HIDDEN)) + HIDDEN * classes + classes


def _resolve(name: str) -> BackboneSpec:
    cell, _, width = name.partition("@")
    if not width.isdigit() or int(width) < 1:
        raise UnknownBackboneError(f"{name!r}: give the values per frame, e.g. {cell}@20")
    return rnn_spec(cell, int(width))


BACKBONES = tuple(rnn_spec(cell) for cell in CELLS)
RESOLVERS = {f"{cell}@": _resolve for cell in CELLS}
