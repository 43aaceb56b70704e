"""Fine-tuning strategies: which parameter groups train, and the BatchNorm policy for the rest.

Groups come from the backbone's tap points in depth order (``stem``, ``blocks.0``, ...), then
``top`` (the parameters after the last tap, e.g. EfficientNet's ``conv_head``/``bn2``) and
``classifier`` (the new output layer).

- ``head``: only the classifier trains.
- ``last:N``: the classifier, ``top`` and the last N tap groups train.
  (Parameters between taps join the next tap's group.)
- ``full``: everything trains.
- ``lp-ft``: ``head`` first (linear probe), then ``full`` from there.
- ``gradual``: ``head`` first, then one more group unfreezes every ``unfreeze_every`` epochs.

Frozen groups keep BatchNorm in eval mode, so their running statistics do not drift while the
rest trains (the trap where "frozen" layers still change through BN statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from transfuse.backbones.nets.base import FINAL_TAPS, Backbone
from transfuse.errors import DataError

STRATEGIES = ("head", "last:N", "full", "lp-ft", "gradual")


@dataclass(frozen=True)
class Strategy:
    """A parsed ``--strategy``."""

    name: str  # head | last | full | lp-ft | gradual
    n: int = 0  # for last:N

    def trainable_at(self, epoch: int, n_groups: int, probe_epochs: int, unfreeze_every: int) -> int:
        """How many groups, counted from the top (classifier = 1), train in ``epoch`` (0-based)."""
        if self.name == "head":
            return 1
        if self.name == "last":
            return min(n_groups, self.n + 2)  # classifier + top + N tap groups
        if self.name == "full":
            return n_groups
        if self.name == "lp-ft":
            return 1 if epoch < probe_epochs else n_groups
        # gradual
        if epoch < probe_epochs:
            return 1
        return min(n_groups, 2 + (epoch - probe_epochs) // max(1, unfreeze_every))


def parse_strategy(spec: str) -> Strategy:
    """``"last:2"`` -> Strategy("last", 2); errors name the allowed forms."""
    name, _, arg = spec.strip().partition(":")
    if name == "last":
        try:
            n = int(arg)
        except ValueError:
            raise DataError(f"strategy last:N needs a whole number of blocks, got {spec!r}") from None
        if n < 1:
            raise DataError(f"strategy last:N needs N >= 1, got {n}")
        return Strategy("last", n)
    if name in ("head", "full", "lp-ft", "gradual") and not arg:
        return Strategy(name)
    raise DataError(f"unknown strategy {spec!r}; choose one of {', '.join(STRATEGIES)}")


def parameter_groups(backbone: Backbone) -> list[tuple[str, list[str]]]:
    """``(group name, module prefixes)`` from the input side to the output side.

    Parameters outside every tap module join the next tap group in the network's order (so
    EfficientNet's ``conv_stem`` goes with the ``stem`` tap at ``bn1``); those after the last
    tap form ``top``; the output layer is ``classifier``. Taps that hold no parameters (a pooling
    layer) are not groups, so ``last:N`` counts layers that train.
    """
    model = backbone.model
    classifier = _classifier_name(model)
    taps = [(t.name, t.module) for t in backbone.taps if t.module not in FINAL_TAPS]
    groups: dict[str, list[str]] = {name: [module] for name, module in taps}
    pending: list[str] = []
    for pname, _ in model.named_parameters():
        owner = next((name for name, module in taps if _under(pname, module)), None)
        if owner is None and not _under(pname, classifier):
            module_path = pname.rsplit(".", 1)[0]
            if module_path not in pending:
                pending.append(module_path)
        elif owner is not None and pending:
            groups[owner] = [*pending, *groups[owner]]
            pending = []
    owners = {next((name for name, module in taps if _under(p, module)), None) for p, _ in model.named_parameters()}
    ordered = [(name, groups[name]) for name, _ in taps if name in owners]  # a pooling tap has nothing to train
    if pending:
        ordered.append(("top", pending))
    ordered.append(("classifier", [classifier]))
    return ordered


def apply(model: nn.Module, groups: list[tuple[str, list[str]]], n_trainable: int) -> list[str]:
    """Set ``requires_grad`` so the last ``n_trainable`` groups train; return the frozen prefixes."""
    frozen = [p for _, prefixes in groups[: len(groups) - n_trainable] for p in prefixes]
    for name, param in model.named_parameters():
        param.requires_grad = not any(_under(name, p) for p in frozen)
    return frozen


def freeze_batchnorm(model: nn.Module, frozen: list[str]) -> None:
    """Put BatchNorm layers under frozen prefixes in eval mode (call after ``model.train()``)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(_under(name, p) for p in frozen):
            module.eval()


def _under(name: str, prefix: str) -> bool:
    """Whether parameter or module ``name`` is ``prefix`` or inside it (``.`` in torch names, ``/`` in
    the names Keras gives its variables)."""
    return name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "/")


def _classifier_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(name, str) and name in dict(model.named_modules()):
        return name
    if "classifier" in dict(model.named_children()):
        return "classifier"
    raise DataError(f"cannot find the classifier layer of {type(model).__name__}; fine-tuning needs a timm-style model")
