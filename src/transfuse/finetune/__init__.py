"""Parameter-based transfer: copy the pretrained weights, freeze some, train the rest.

``strategy.py`` decides what trains (and keeps frozen BatchNorm statistics frozen),
``task.py`` adapts each modality (network with a new output layer, parameter groups, batches),
``module.py`` is the LightningModule, ``train.py`` wires data, Trainer and checkpoints,
``config.py`` holds what decides a run and ``model.py`` the saved result (a part of kind ``finetuned``).
The package imports nothing at first, so that reading a saved model's parts needs no torch until a
fine-tuned network is actually loaded.
"""

__all__ = ["Strategy", "parse_strategy"]


def __getattr__(name: str):
    if name in __all__:
        from transfuse.finetune import strategy

        return getattr(strategy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
