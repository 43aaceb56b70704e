"""Input contracts: how raw items must be prepared for a backbone, per modality. Plain data (no
torch at import), part of every cache key through ``identity()``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


class _Contract:
    """What every input contract has: an identity string that changes whenever preparation does."""

    def identity(self) -> str:
        """A stable string that changes whenever the preprocessing changes (part of cache keys)."""
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class InputSpec(_Contract):
    """How raw images must be prepared for a backbone (from its pretrained config)."""

    size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"

    def transform(self):
        """A torchvision transform from PIL image to normalised tensor (timm's eval factory)."""
        from timm.data import create_transform

        return create_transform(
            input_size=(3, self.size, self.size),
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode="center",
        )

    def geometry(self):
        """The resize and crop of :meth:`transform` alone (PIL in, PIL out): decoding workers stop
        there and ship uint8 pixels, 4x less to copy; :meth:`normalize` finishes on whole batches."""
        from torchvision.transforms import Compose

        steps = self.transform().transforms
        if [type(t).__name__ for t in steps[-2:]] != ["MaybeToTensor", "Normalize"]:
            raise RuntimeError(f"unexpected timm eval transform {steps}")  # a timm change: fail loudly
        return Compose(steps[:-2])

    def normalize(self, pixels):
        """``(N, H, W, 3)`` uint8 -> normalised float ``(N, 3, H, W)`` in channels_last memory, with
        the same arithmetic as :meth:`transform` (/255, minus mean, over std)."""
        import torch

        x = pixels.permute(0, 3, 1, 2).float().div_(255)  # NHWC memory is channels_last already
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def describe(self) -> str:
        return f"input {self.size}px"


@dataclass(frozen=True)
class TextSpec(_Contract):
    """How texts are prepared: the tokenizer and the longest window the encoder reads."""

    tokenizer: str
    max_tokens: int = 256

    def describe(self) -> str:
        return f"window {self.max_tokens} tokens"


@dataclass(frozen=True)
class AudioSpec(_Contract):
    """How clips are prepared: sample rate and the fewest samples the encoder accepts."""

    sample_rate: int = 16000
    min_samples: int = 0

    def describe(self) -> str:
        return f"{self.sample_rate / 1000:g} kHz mono"


@dataclass(frozen=True)
class SequenceSpec(_Contract):
    """How frame sequences are prepared: values per frame, and ``cmvn`` (each item's frames centred
    and scaled per value over its own frames: cepstral mean and variance normalisation)."""

    width: int
    normalization: str = "cmvn"  # what the network does first (recorded so a change shows in cache keys)

    def describe(self) -> str:
        return f"{self.width} values per frame"
