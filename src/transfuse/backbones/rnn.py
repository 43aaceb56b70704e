"""``gru`` and ``lstm``: recurrent source networks for sequences of feature frames (MFCCs and the like),
to train on a source task (``transfuse train-source DATA --arch gru``) and transfer from.

Two stacked one-layer RNNs (``rnn1``, ``rnn2``, 64 units each) over the item's frames after
per-item mean and variance normalisation; the classifier reads ``rnn2``'s state after the last real
frame. Each RNN layer is a tap whose output is its state at every frame; ``--pooling last`` (the
default) takes the state after the last frame, ``avg`` their mean (``max``, ``meanstd`` too);
``logits`` is the source task's output layer read at every frame (``last``: the network's output).
``gru``/``lstm`` read 13 values per frame (MFCCs); ``gru@N``/``lstm@N`` read N.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from transfuse.backbones.base import Backbone, TapPoint
from transfuse.backbones.inputs import SequenceSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.weights import architecture_only
from transfuse.config import default_workers
from transfuse.errors import UnknownBackboneError
from transfuse.taps import check_pooling, pool_frames

CELLS = ("gru", "lstm")
WIDTH = 13  # MFCCs
HIDDEN = 64
TAPS = ("rnn1", "rnn2")


def cmvn(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each item's real frames centred and scaled per value (padding stays zero)."""
    stats = pool_frames(frames, lengths, "meanstd")
    mean, std = stats.chunk(2, dim=1)
    mask = (torch.arange(frames.shape[1], device=frames.device)[None] < lengths[:, None].to(frames.device))[..., None]
    return ((frames - mean[:, None]) / std[:, None].clamp(min=1e-5)) * mask


class RNNNet(nn.Module):
    """Frames -> rnn1 -> rnn2 -> classifier (on rnn2's last state); inputs are ``{"frames", "lengths"}``."""

    def __init__(self, cell: str, width: int = WIDTH, hidden: int = HIDDEN, num_classes: int = 10) -> None:
        super().__init__()
        layer = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn1 = layer(width, hidden, batch_first=True)
        self.rnn2 = layer(hidden, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def states(self, frames: torch.Tensor, lengths: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's state at every frame, with the number of real frames per item (the RNNs run
        left to right, so padding after an item never changes its states)."""
        h1, _ = self.rnn1(cmvn(frames, lengths))
        h2, _ = self.rnn2(h1)
        return {"rnn1": (h1, lengths), "rnn2": (h2, lengths), "logits": (self.classifier(h2), lengths)}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.classifier(pool_frames(*self.states(batch["frames"], batch["lengths"])["rnn2"], "last"))


@dataclass
class SequenceBackbone(Backbone):
    """A recurrent network behind the Backbone interface: ``.npy`` items in, pooled layer states out."""

    modality = "sequence"

    def default_batch_size(self, device: str) -> int:
        return 64

    def prepare(self, device: str) -> None:
        self.model.to(device)

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: (self.model.classifier.out_features if t.name == "logits" else self.model.rnn1.hidden_size,)
                for t in self.taps}

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        from torch.utils.data import DataLoader

        from transfuse.data.datasets import SequenceFiles, pad_frames

        if num_workers is None:
            num_workers = default_workers(len(items), device)
        for (frames, lengths), positions, ok in DataLoader(SequenceFiles(items, self.input_spec.width),
                                                           batch_size=batch_size, num_workers=num_workers,
                                                           collate_fn=pad_frames):
            yield {"frames": frames, "lengths": lengths}, positions, ok

    @torch.inference_mode()
    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str,
              runner=None) -> dict[str, torch.Tensor]:
        check_pooling(pooling, "sequence")
        self.check_taps(taps)
        lengths = inputs["lengths"][good]
        frames = inputs["frames"][good][:, : int(lengths.max())]
        states = self.model.states(frames.to(device), lengths.to(device))
        return {tap: pool_frames(*states[tap], pooling) for tap in taps}


def rnn_name(cell: str, width: int) -> str:
    """``gru`` for MFCC-wide frames, ``gru@W`` for others (the name every command takes)."""
    return cell if width == WIDTH else f"{cell}@{width}"


@functools.lru_cache(maxsize=16)
def rnn_spec(cell: str, width: int = WIDTH) -> BackboneSpec:
    """The spec of ``gru``/``lstm`` for ``width`` values per frame."""
    name = rnn_name(cell, width)
    contract = SequenceSpec(width=width)

    def build(pretrained: bool) -> Backbone:
        if pretrained:
            architecture_only(name, cell)()
        return SequenceBackbone(name=name, weights_id="", input_spec=contract, model=RNNNet(cell, width),
                                taps=[*(TapPoint(tap, tap, depth) for depth, tap in enumerate(TAPS)),
                                      TapPoint("logits", "logits", len(TAPS))],
                                default_taps=("rnn2",))

    return BackboneSpec(
        name=name, build=build, input_spec=contract,
        taps=(*(TapSpec(t, d, (HIDDEN,)) for d, t in enumerate(TAPS)), TapSpec("logits", len(TAPS), (10,))),
        weights=WeightsSource(id=f"{name}:none", origin="none (architecture only)",
                              get=f"train it: transfuse train-source DATA --arch {cell}",
                              locate=architecture_only(name, cell)),
        modality="sequence", family=cell, license="none", offline=False, default_taps=("rnn2",),
        description=f"two-layer {cell.upper()} ({HIDDEN} units) over {width}-value frames, to train on a source task",
        params=sum(p.numel() for p in RNNNet(cell, width).parameters()))


def _resolve(name: str) -> BackboneSpec:
    cell, _, width = name.partition("@")
    if not width.isdigit() or int(width) < 1:
        raise UnknownBackboneError(f"{name!r}: give the values per frame, e.g. {cell}@20")
    return rnn_spec(cell, int(width))


BACKBONES = tuple(rnn_spec(cell) for cell in CELLS)
RESOLVERS = {f"{cell}@": _resolve for cell in CELLS}
