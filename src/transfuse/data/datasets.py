"""The torch side of reading items: map-style datasets that decode (or read) items in DataLoader
workers and flag failures instead of raising, and the collate functions for items of different
lengths. The decoders themselves (``images``, ``audio``, ``sequences``) need no torch, so listing
and checking data, and predicting from cached features, never import it."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from transfuse.data.audio import decode_audio
from transfuse.data.images import decode_image
from transfuse.data.sequences import read_sequence
from transfuse.errors import CorruptInputError

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """Decodes and preprocesses images in DataLoader workers; failures come back flagged.

    With ``pixels=True`` the transform ends at a PIL image and items are ``(H, W, 3)`` uint8
    tensors (normalised later, per batch); otherwise whatever tensor the transform makes."""

    def __init__(self, paths: list[str], transform, size: int, pixels: bool = False) -> None:
        self.paths, self.transform, self.size, self.pixels = paths, transform, size, pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            out = self.transform(decode_image(self.paths[i]))
            return (torch.from_numpy(np.array(out, dtype=np.uint8)) if self.pixels else out), i, True
        except CorruptInputError as exc:
            log.debug("%s", exc)
        except Exception as exc:  # a transform failing on odd content is a bad input too
            log.debug("cannot preprocess %s: %s", self.paths[i], exc)
        blank = torch.zeros(self.size, self.size, 3, dtype=torch.uint8) if self.pixels else \
            torch.zeros(3, self.size, self.size)
        return blank, i, False


class AudioFiles(Dataset):
    """Decodes and resamples audio in DataLoader workers; failures come back flagged."""

    def __init__(self, paths: list[str], sample_rate: int) -> None:
        self.paths, self.sample_rate = paths, sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(decode_audio(self.paths[i], self.sample_rate)), i, True
        except CorruptInputError as exc:
            log.debug("%s", exc)
        return torch.zeros(0), i, False


def pad_batch(items: list[tuple[torch.Tensor, int, bool]], min_samples: int = 0):
    """Collate waveforms of different lengths: zero-padded at the end to the longest (and to
    ``min_samples``). Returns ``((waves, lengths), positions, ok)``."""
    waves, idx, ok = zip(*items)
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), max(min_samples, int(lengths.max()) if len(lengths) else 0))
    for j, w in enumerate(waves):
        out[j, : len(w)] = w
    return (out, lengths), torch.tensor(idx), torch.tensor(ok)


class SequenceFiles(Dataset):
    """Reads items in DataLoader workers; failures come back flagged (one blank frame)."""

    def __init__(self, paths: list[str], width: int) -> None:
        self.paths, self.width = paths, width

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            frames = read_sequence(self.paths[i])
            if frames.shape[1] != self.width:
                raise CorruptInputError(f"sequence {self.paths[i]} has {frames.shape[1]} values per frame; the network "
                                        f"reads {self.width}", [self.paths[i]])
            return torch.from_numpy(frames), i, True
        except CorruptInputError as exc:
            log.debug("%s", exc)
            return torch.zeros(1, self.width), i, False


def pad_frames(rows) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``((frames (B, T, width) zero-padded, lengths), positions, ok)`` of one batch."""
    frames, positions, ok = zip(*rows)
    lengths = torch.tensor([f.shape[0] for f in frames])
    padded = torch.zeros(len(frames), int(lengths.max()), frames[0].shape[1])
    for row, f in enumerate(frames):
        padded[row, : f.shape[0]] = f
    return (padded, lengths), torch.tensor(positions), torch.tensor(ok)
