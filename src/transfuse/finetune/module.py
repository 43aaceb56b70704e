"""The LightningModule: cross-entropy on a timm-style model whose trainable groups follow a Strategy."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from transfuse.finetune.strategy import Strategy, apply, freeze_batchnorm
from transfuse.finetune.task import run_seed


class TransferModule(L.LightningModule):
    """Trains ``model`` under ``strategy``; layer-wise learning-rate decay by group; optional L2-SP.

    ``groups`` runs from input to output (see :func:`~transfuse.finetune.strategy.parameter_groups`).
    The classifier gets ``lr``; the group below it ``backbone_lr`` (default ``lr * layer_decay``),
    and each further group ``layer_decay`` times less.
    """

    def __init__(self, model: nn.Module, groups: list[tuple[str, list[str]]], strategy: Strategy, lr: float = 1e-3,
                 layer_decay: float = 0.75, weight_decay: float = 1e-4, probe_epochs: int = 3,
                 unfreeze_every: int = 1, l2sp: float = 0.0, label_smoothing: float = 0.1,
                 backbone_lr: float | None = None, seed: int = 0,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model.train()  # frozen parts go to eval per batch (on_train_batch_start)
        self.groups = groups
        self.strategy = strategy
        self.lr, self.layer_decay, self.weight_decay = lr, layer_decay, weight_decay
        self.probe_epochs, self.unfreeze_every = probe_epochs, unfreeze_every
        self.l2sp = l2sp
        self.backbone_lr = backbone_lr
        self.seed = seed
        self.label_smoothing = label_smoothing
        # not persistent: the saved network's weights stay exactly the network's
        self.register_buffer("class_weights", class_weights, persistent=False)
        classifier = groups[-1][1]
        # L2-SP anchors: the starting (pretrained) weights of everything but the new classifier
        self._anchor = {n: p.detach().clone() for n, p in model.named_parameters()
                        if l2sp > 0 and not any(n.startswith(c + ".") for c in classifier)}
        self.frozen: list[str] = []
        self.n_trainable = 0
        self._sync(0)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with label smoothing, each class weighted as asked (``--class-weight``)."""
        return nn.functional.cross_entropy(logits, y, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def _sync(self, epoch: int) -> None:
        n = self.strategy.trainable_at(epoch, len(self.groups), self.probe_epochs, self.unfreeze_every)
        if n != self.n_trainable:
            self.frozen = apply(self.model, self.groups, n)
            self.n_trainable = n

    def setup(self, stage: str) -> None:
        """Runs before Lightning wraps the model in DDP, which only syncs parameters that are
        trainable at that moment: make all of them trainable here, and let the first epoch
        freeze again what the strategy says (``find_unused_parameters`` covers frozen ones)."""
        if self.trainer is not None and self.trainer.world_size > 1:
            for p in self.model.parameters():
                p.requires_grad = True
            self.n_trainable, self.frozen = -1, []

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(run_seed(self.seed, self.current_epoch))  # dropout & co: the same on resume
        self._sync(self.current_epoch)
        self.model.train()  # the backbone arrives in eval mode; Lightning keeps modules' modes as they are
        self.log("trainable_groups", float(self.n_trainable), sync_dist=True)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        freeze_batchnorm(self.model, self.frozen)  # frozen parts keep their BN statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._loss(self.model(x), y)
        if self._anchor:
            drift = sum(((p - self._anchor[n].to(p.device)) ** 2).sum()
                        for n, p in self.model.named_parameters() if p.requires_grad and n in self._anchor)
            loss = loss + self.l2sp * drift
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        # sync_dist: with several processes every rank sees the same value, so early stopping and
        # checkpointing agree (a no-op with one process)
        self.log("val_loss", self._loss(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        params = dict(self.model.named_parameters())
        param_groups = []
        for depth, (_, prefixes) in enumerate(reversed(self.groups)):
            members = [p for n, p in params.items() if any(n == q or n.startswith(q + ".") for q in prefixes)]
            if members:
                top = self.lr * self.layer_decay if self.backbone_lr is None else self.backbone_lr
                lr = self.lr if depth == 0 else top * self.layer_decay ** (depth - 1)
                param_groups.append({"params": members, "lr": lr})
        return torch.optim.AdamW(param_groups, lr=self.lr, weight_decay=self.weight_decay)
