"""Tap specifications and pooling: how a layer's output becomes one vector per item.

The names and checks need no torch (a saved model is validated without it); the pooling
functions import it when they run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from transfuse.errors import DataError

if TYPE_CHECKING:
    import torch

POOLINGS = ("avg", "max", "gem", "avgmax", "cls")
GEM_P = 3.0


def parse_layers(layers: str | Iterable[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (order kept, duplicates dropped); None stays None."""
    if layers is None:
        return None
    parts = layers.split(",") if isinstance(layers, str) else list(layers)
    out: list[str] = []
    for p in (s.strip() for s in parts):
        if p and p not in out:
            out.append(p)
    return out or None


TEXT_POOLINGS = ("avg", "max", "avgmax", "cls")  # over the tokens under the padding mask
AUDIO_POOLINGS = ("meanstd", "avg", "max")  # over the frames that cover real audio
SEQUENCE_POOLINGS = ("last", "avg", "max", "meanstd")  # over the real frames; last: the state after the last one
DEFAULT_POOLING = {"image": "avg", "text": "avg", "audio": "meanstd", "sequence": "last"}


def check_pooling(pooling: str | None, modality: str = "image") -> str:
    """Validate a pooling name for a backbone of the given modality (None: the modality's default)."""
    if pooling is None:
        return DEFAULT_POOLING[modality]
    allowed = {"text": TEXT_POOLINGS, "audio": AUDIO_POOLINGS, "sequence": SEQUENCE_POOLINGS}.get(modality, POOLINGS)
    if pooling not in allowed:
        raise DataError(f"pooling {pooling!r} does not apply to {modality} backbones; choose one of "
                        f"{', '.join(allowed)}")
    return pooling


def pool(x: torch.Tensor, pooling: str, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Reduce a tap output to ``(N, D)``.

    4-D ``(N, C, H, W)`` maps are pooled over space (avg, max, GeM with p=3, ``avgmax``: average
    and maximum side by side, 2C wide; ``cls`` falls back to avg). 3-D ``(N, T, D)`` token
    sequences: ``cls`` takes token 0, the others pool over the non-prefix tokens. 2-D outputs pass
    through.

    >>> import torch
    >>> pool(torch.ones(2, 8, 7, 7), "avg").shape
    torch.Size([2, 8])
    """
    import torch

    x = x.float()
    if x.ndim == 2:
        return x
    if pooling == "avgmax" and x.ndim in (3, 4):
        return torch.cat([pool(x, "avg", num_prefix_tokens), pool(x, "max", num_prefix_tokens)], dim=1)
    if x.ndim == 4:
        if pooling == "max":
            return x.amax(dim=(2, 3))
        if pooling == "gem":
            return x.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        if pooling == "cls":
            return x[:, 0]
        tokens = x[:, num_prefix_tokens:] if x.shape[1] > num_prefix_tokens else x
        if pooling == "max":
            return tokens.amax(dim=1)
        if pooling == "gem":
            return tokens.clamp(min=1e-6).pow(GEM_P).mean(dim=1).pow(1.0 / GEM_P)
        return tokens.mean(dim=1)
    raise DataError(f"cannot pool a tap output of shape {tuple(x.shape)}")


def pool_frames(h: torch.Tensor, valid: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce ``(N, T, D)`` frames to ``(N, D)`` over the first ``valid[i]`` frames of each row (the
    rest is padding): ``avg``, ``max``, ``meanstd`` (mean and standard deviation side by side, 2D)
    or ``last`` (the frame at ``valid - 1``: a recurrent network's state after the whole item).

    >>> import torch
    >>> pool_frames(torch.arange(6.).view(1, 3, 2), torch.tensor([2]), "last").tolist()
    [[2.0, 3.0]]
    """
    import torch

    h = h.float()
    if pooling == "last":
        index = (valid.long().clamp(min=1) - 1).to(h.device)
        return h[torch.arange(h.shape[0], device=h.device), index]
    mask = (torch.arange(h.shape[1], device=h.device)[None] < valid[:, None].to(h.device)).float()[..., None]
    n = mask.sum(1).clamp(min=1)
    mean = (h * mask).sum(1) / n
    if pooling == "max":
        return h.masked_fill(mask == 0, float("-inf")).amax(1)
    if pooling == "meanstd":
        std = (((h - mean[:, None]) ** 2 * mask).sum(1) / n).sqrt()
        return torch.cat([mean, std], dim=1)
    return mean
