"""The torch side of the learned fusions (weighted, scalar-mix, gated): the network they train and
its training loop. Only their ``fit`` imports it; their saved arrays predict in numpy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FusionNet(nn.Module):
    """Per-block projections (or none), mixed by softmax block weights or a per-item gate, and a
    linear classifier on the mix."""

    def __init__(self, widths: list[int], width: int, n_classes: int, gated: bool, dropout: float,
                 project: bool = True) -> None:
        super().__init__()
        self.gated = gated
        self.proj = nn.ModuleList(nn.Linear(w, width) if project else nn.Identity() for w in widths)
        self.alpha = nn.Parameter(torch.zeros(len(widths)))
        self.gate = nn.Linear(width, 1, bias=False)
        self.gate_bias = nn.Parameter(torch.zeros(len(widths)))
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)

    def fuse(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        H = torch.stack([p(b) for p, b in zip(self.proj, blocks)], dim=1)  # (n, blocks, width)
        if self.gated:
            H = torch.relu(H)
            g = torch.softmax(self.gate(H).squeeze(-1) + self.gate_bias, dim=1)
        else:
            g = torch.softmax(self.alpha, dim=0).expand(H.shape[0], -1)
        return (g.unsqueeze(-1) * H).sum(dim=1)

    def forward(self, blocks: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.drop(self.fuse(blocks)))


def train_fusion(net: FusionNet, blocks: list[np.ndarray], y_idx: np.ndarray, cfg) -> int:
    """Full-batch AdamW on cross-entropy; early stopping on a stratified 20% split when every
    class has at least 5 items. ``cfg`` holds the fusion's ``lr``, ``weight_decay``, ``max_epochs``,
    ``patience`` and ``random_state``. Returns the epoch whose weights were kept."""
    n = len(y_idx)
    counts = np.bincount(y_idx)
    rng = np.random.default_rng(cfg.random_state)
    val = np.zeros(n, dtype=bool)
    if counts.min() >= 5:
        for c in range(len(counts)):
            idx = np.flatnonzero(y_idx == c)
            val[rng.choice(idx, size=max(1, len(idx) // 5), replace=False)] = True
    tensors = [torch.as_tensor(b, dtype=torch.float32) for b in blocks]
    target = torch.as_tensor(y_idx)
    tr = torch.as_tensor(~val)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best, best_epoch, best_state = np.inf, 0, None
    for epoch in range(1, int(cfg.max_epochs) + 1):
        net.train()
        opt.zero_grad()
        loss = loss_fn(net([t[tr] for t in tensors]), target[tr])
        loss.backward()
        opt.step()
        if val.any():
            net.eval()
            with torch.no_grad():
                v = loss_fn(net([t[~tr] for t in tensors]), target[~tr]).item()
            if v < best - 1e-4:
                best, best_epoch = v, epoch
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
            elif epoch - best_epoch >= cfg.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
        return best_epoch
    return int(cfg.max_epochs)
