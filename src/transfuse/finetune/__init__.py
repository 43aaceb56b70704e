"""Parameter-based transfer: copy the pretrained weights, freeze some, train the rest.

``strategy.py`` decides what trains (and keeps frozen BatchNorm statistics frozen),
``module.py`` is the LightningModule, ``train.py`` wires data, Trainer, checkpoints and the
saved model directory.
"""

from transfuse.finetune.strategy import Strategy, parse_strategy

__all__ = ["Strategy", "parse_strategy"]
