"""What decides how a network is fine-tuned: saved with the model, read back to rebuild it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from transfuse.errors import DataError

_AT_LEAST = {"epochs": 1, "image_size": 16, "batch_size": 1, "patience": 1, "probe_epochs": 0, "unfreeze_every": 1,
             "seed": 0}


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
    image_size: int | None = None  # None: the backbone's own size, at most 128 (see for_backbone)
    batch_size: int = 32
    patience: int = 5
    val_fraction: float = 0.15
    augment: bool = True
    precision: str = "auto"
    seed: int = 0
    class_weight: str | None = None  # "balanced": the loss weights each class by its inverse frequency

    @property
    def run_name(self) -> str:
        """How a run is named in folder names and titles: ``scratch``, or the strategy (``last2``)."""
        return "scratch" if self.from_scratch else self.strategy.replace(":", "")

    def for_backbone(self, spec) -> FinetuneConfig:
        """The config with its image size settled for ``spec``: as given, else the backbone's input size
        capped at 128 px (CPU-friendly); a network whose input size is fixed (``Flatten -> Dense``)
        takes only its own, and any other is a clear error."""
        fixed = spec.extra.get("fixed_size") and getattr(spec.input_spec, "size", None)
        if fixed and self.image_size not in (None, fixed):
            raise DataError(f"{spec.name} reads {fixed} px images only (its Flatten -> Dense fixes the size), got "
                            f"--image-size {self.image_size}; drop the option or train small_cnn@{self.image_size}")
        size = self.image_size or fixed or min(getattr(spec.input_spec, "size", 128), 128)
        return replace(self, image_size=size)

    def check(self) -> None:
        """Clear errors for numbers out of range, before any work (the CLI checks its flags the same
        way): what was given, and what is allowed."""
        for name, low in _AT_LEAST.items():
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise DataError(f"{name} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "backbone_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise DataError(f"{name} must be above 0, got {getattr(self, name)}")
        if not 0 < self.layer_decay <= 1 or self.l2sp < 0 or self.weight_decay < 0:
            raise DataError(f"layer_decay must be in (0, 1] and l2sp, weight_decay at least 0; got {self.layer_decay}, "
                            f"{self.l2sp}, {self.weight_decay}")
        if self.class_weight not in (None, "balanced"):
            raise DataError(f"class_weight must be 'balanced' or none, got {self.class_weight!r}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.strategy.split(":")[0] in ("lp-ft", "gradual") and self.epochs <= self.probe_epochs:
            raise DataError(f"{self.strategy} trains only the new output layer for the first {self.probe_epochs} "
                            f"epochs (--probe-epochs), and --epochs {self.epochs} ends there: give more epochs, fewer "
                            f"probe epochs, or --strategy head")
