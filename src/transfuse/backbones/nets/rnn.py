"""``gru``'s and ``lstm``'s network: two stacked one-layer RNNs over per-item normalised frames,
behind the Backbone interface (``.npy`` items in, pooled layer states out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transfuse.backbones.nets.base import Backbone
from transfuse.config import default_workers
from transfuse.taps import check_pooling, pool_frames


def cmvn(frames: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each item's real frames centred and scaled per value (padding stays zero); ``lengths`` None:
    every frame is real (one item, as an exported graph reads it)."""
    if lengths is None:
        mean = frames.mean(1, keepdim=True)
        std = (frames - mean).pow(2).mean(1, keepdim=True).sqrt()
        return (frames - mean) / std.clamp(min=1e-5)
    stats = pool_frames(frames, lengths, "meanstd")
    mean, std = stats.chunk(2, dim=1)
    mask = (torch.arange(frames.shape[1], device=frames.device)[None] < lengths[:, None].to(frames.device))[..., None]
    return ((frames - mean[:, None]) / std[:, None].clamp(min=1e-5)) * mask


class RNNNet(nn.Module):
    """Frames -> rnn1 -> rnn2 -> classifier (on rnn2's last state); inputs are ``{"frames", "lengths"}``."""

    def __init__(self, cell: str, width: int, hidden: int, num_classes: int = 10) -> None:
        super().__init__()
        layer = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn1 = layer(width, hidden, batch_first=True)
        self.rnn2 = layer(hidden, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def states(self, frames: torch.Tensor, lengths: torch.Tensor | None) -> dict[str, tuple]:
        """Every layer's state at every frame, with the number of real frames per item (the RNNs run
        left to right, so padding after an item never changes its states; None: all are real)."""
        h1, _ = self.rnn1(cmvn(frames, lengths))
        h2, _ = self.rnn2(h1)
        return {"rnn1": (h1, lengths), "rnn2": (h2, lengths), "logits": (self.classifier(h2), lengths)}

    def forward(self, batch: dict) -> torch.Tensor:
        """Class scores from rnn2's state after each item's last real frame (no ``lengths``: one
        unpadded item, as an exported graph reads it)."""
        h, lengths = self.states(batch["frames"], batch.get("lengths"))["rnn2"]
        return self.classifier(h[:, -1] if lengths is None else pool_frames(h, lengths, "last"))


class SequenceTaps(nn.Module):
    """One sequence ``(1, T, W)``, every frame real, in; each tap's states ``(1, T, D)`` out: the
    graph ``transfuse export`` builds."""

    def __init__(self, model: RNNNet, taps: list[str]) -> None:
        super().__init__()
        self.model, self.taps = model, taps

    def forward(self, frames: torch.Tensor) -> tuple:
        states = self.model.states(frames, None)
        return tuple(states[tap][0] for tap in self.taps)


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
