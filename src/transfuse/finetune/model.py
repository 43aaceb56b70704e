"""A fine-tuned network as a saved part: items in, class probabilities out."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from transfuse.backbones import create_backbone, get_spec
from transfuse.data.inmemory import item_files
from transfuse.errors import CorruptInputError
from transfuse.finetune.config import FinetuneConfig

if TYPE_CHECKING:  # torch is imported when a network is built or run: the part table needs no torch
    import torch


class FinetunedModel:
    """A fine-tuned network with its classes and input preparation: ``predict_proba(items)``.
    Items are image paths or texts, as the backbone's modality says. Saved as a part of kind
    ``finetuned`` (role ``model``: a whole classifier): the network's state dict as arrays, its
    :class:`FinetuneConfig` and classes as meta. With ``tta`` an image's probabilities are the mean
    over the image and its mirror image (test-time augmentation; ``transfuse auto`` turns it on when
    it helps on validation)."""

    kind = "finetuned"
    role = "model"

    def __init__(self, model: torch.nn.Module, classes: list[str], task, config: FinetuneConfig,
                 tta: bool = False) -> None:
        self.model, self.classes_, self.task, self.config = model, np.asarray(classes), task, config
        self.modality = task.modality
        self.tta = bool(tta) and self.modality == "image"  # a mirrored text or clip means nothing

    def scores(self, items: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(readable mask, probabilities of the readable items)``, decoding every file once; items may
        be in memory (see :mod:`transfuse.data.inmemory`)."""
        import torch

        with item_files(items, self.modality) as paths, torch.inference_mode():
            return self._scores(paths, batch_size)

    def _scores(self, items: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        self.model.eval()
        device = next(self.model.parameters()).device
        ok = np.zeros(len(items), dtype=bool)
        proba = np.zeros((len(items), len(self.classes_)), dtype=np.float32)
        for x, idx, good in self.task.predict_batches(list(items), batch_size):  # batches may come in any order
            ok[idx.numpy()] = good.numpy()
            if good.any():
                x = x[good].to(device) if torch.is_tensor(x) else {k: v[good].to(device) for k, v in x.items()}
                p = torch.softmax(self.model(x).float(), 1)
                if self.tta:
                    p = (p + torch.softmax(self.model(torch.flip(x, dims=[3])).float(), 1)) / 2
                proba[idx[good].numpy()] = p.cpu().numpy()
        return ok, proba[ok]

    def predict_proba(self, items: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per item (raises for unreadable files)."""
        ok, proba = self.scores(items, batch_size)
        if not ok.all():
            raise CorruptInputError.unreadable([str(p) for p, good in zip(items, ok) if not good], len(items),
                                               cached=False)
        return proba

    def predict(self, items: list[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(items).argmax(1)]

    def configure(self, device: str | None = None, **settings) -> FinetunedModel:
        """Run-time settings: ``device`` moves the network; the feature path's (workers, cache,
        engine) do not apply to a whole network."""
        if device:
            self.model.to(device)
        return self

    # -- the part protocol ----------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The network's state dict (fp32 numpy arrays), and its fine-tuning config and classes."""
        import torch

        arrays = {k: v.detach().cpu().float().numpy() if v.dtype == torch.bfloat16 else v.detach().cpu().numpy()
                  for k, v in self.model.state_dict().items()}
        meta = {"finetune": asdict(self.config), "classes": [str(c) for c in self.classes_], "modality": self.modality,
                "taps": list(self.task.backbone.tap_names),  # for readers of the folder (local: rebuilds its own)
                "architecture": architecture(self.config.backbone), "tta": self.tta}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> FinetunedModel:
        """The architecture rebuilt from the config (no pretrained weights read), then the saved
        state loaded strictly."""
        import torch

        from transfuse.finetune.task import make_task

        config = FinetuneConfig(**meta["finetune"])
        classes = list(meta["classes"])
        arch = meta.get("architecture") or config.backbone  # a local: source's own folder is not needed here
        weights = "random" if get_spec(arch).trainable else "pretrained"  # a Keras file is its own architecture
        task = make_task(create_backbone(arch, weights=weights), config.image_size, augment=False)
        network = task.network(len(classes))
        try:
            network.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        except RuntimeError as exc:
            raise ValueError(f"the saved network does not fit {config.backbone} ({str(exc)[:200]})") from None
        return cls(network.eval(), classes, task, config, tta=bool(meta.get("tta", False)))


PARTS = (FinetunedModel,)


def architecture(backbone: str) -> str:
    """What rebuilds ``backbone``'s network without its weights: itself, or for a ``local:`` source the
    architecture it was trained from (so a model fine-tuned from it loads without the source folder)."""
    return get_spec(backbone).extra.get("architecture", backbone)
