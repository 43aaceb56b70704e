"""``small_cnn``'s network: ``Conv1 -> Pool1 -> Conv2 -> Pool2 -> Flatten -> Dense -> classifier``
with timm's ``forward_features`` (up to Dense) / ``forward_head`` / ``reset_classifier``."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """3x3 convolutions without padding, ReLU after each convolution and after ``dense``; the
    input size fixes the width of ``Flatten``."""

    def __init__(self, size: int, widths: tuple[int, int], dense: int, num_classes: int = 10) -> None:
        super().__init__()
        side = ((size - 2) // 2 - 2) // 2  # after Conv2 -> Pool2
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Sequential(nn.Conv2d(widths[0], widths[1], 3), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dense = nn.Sequential(nn.Linear(widths[1] * side ** 2, dense), nn.ReLU())
        self.classifier = nn.Linear(dense, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x))))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
