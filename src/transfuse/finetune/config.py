"""What decides how a network is fine-tuned: saved with the model, read back to rebuild it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides what is trained (saved in config.json)."""

    backbone: str = "efficientnet_lite0"
    strategy: str = "lp-ft"
    from_scratch: bool = False
    epochs: int = 10
    lr: float | None = None  # new output layer; None: 1e-3 (images), 1e-2 (text)
    backbone_lr: float | None = None  # top pretrained group; None: lr * layer_decay (images), 2e-5 (text)
    layer_decay: float = 0.75
    weight_decay: float = 1e-4
    l2sp: float = 0.0
    probe_epochs: int = 3
    unfreeze_every: int = 1
    image_size: int = 128
    batch_size: int = 32
    patience: int = 5
    val_fraction: float = 0.15
    augment: bool = True
    precision: str = "auto"
    seed: int = 0
