"""Parameter-based transfer: copy the pretrained weights, freeze some, train the rest.

``strategy.py`` decides what trains (and keeps frozen BatchNorm statistics frozen),
``task.py`` adapts each modality (network with a new output layer, parameter groups, batches),
``module.py`` is the LightningModule, ``train.py`` wires data, Trainer and checkpoints,
``config.py`` holds what decides a run and ``model.py`` the saved result (a part of kind ``finetuned``).
"""

from transfuse.finetune.strategy import Strategy, parse_strategy

__all__ = ["Strategy", "parse_strategy"]
