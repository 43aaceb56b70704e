"""torchvision classifiers as timm-convention networks (``forward_features`` / ``forward_head`` /
``reset_classifier``) with their body's stages as taps. The spec: :mod:`transfuse.backbones.torchvision_adapter`."""

from __future__ import annotations

import torch
from torch import nn

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import FINAL_TAPS, Backbone, TapPoint

HEAD_CHILDREN = ("avgpool", "fc", "classifier", "dropout")
SEQUENCES = ("features", "layers")


class TorchvisionNet(nn.Module):
    """A torchvision classifier split into ``forward_features`` (the body) and ``forward_head``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        children = list(net.named_children())
        cut = next(i for i, (name, _) in enumerate(children) if name in HEAD_CHILDREN)
        self.body_names = [name for name, _ in children[:cut]]
        self.head_names = [name for name, _ in children[cut:]]
        self.classifier_name = "net." + next(n for n in reversed(self.head_names) if n in ("fc", "classifier"))
        self.pretrained_cfg = {"classifier": self.classifier_name}  # where fine-tuning finds the output layer

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.body_names:
            x = getattr(self.net, name)(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if "avgpool" in self.head_names:
            x = self.net.avgpool(x)
        elif x.ndim == 4:
            x = x.mean(dim=(2, 3), keepdim=True)
        classifier = self.get_submodule(self.classifier_name)
        first = classifier[0] if isinstance(classifier, nn.Sequential) else classifier
        if isinstance(first, (nn.Linear, nn.Dropout)):
            x = torch.flatten(x, 1)
        return classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last linear layer of the head (timm's method name, as fine-tuning needs)."""
        classifier = self.get_submodule(self.classifier_name)
        owner, attr = (classifier, None) if isinstance(classifier, nn.Sequential) else (None, self.classifier_name)
        if owner is not None:
            index = max(i for i, m in enumerate(owner) if isinstance(m, nn.Linear))
            owner[index] = nn.Linear(owner[index].in_features, num_classes)
        else:
            parent, _, leaf = attr.rpartition(".")
            setattr(self.get_submodule(parent), leaf, nn.Linear(classifier.in_features, num_classes))

    def tap_modules(self) -> list[tuple[str, str]]:
        """``(tap name, module path)`` of the body in order: stages of a features sequence, else the
        children that hold parameters."""
        if len(self.body_names) == 1 and self.body_names[0] in SEQUENCES:
            seq = self.body_names[0]
            return [(f"{seq}.{i}", f"net.{seq}.{i}") for i in range(len(getattr(self.net, seq)))]
        return [(name, f"net.{name}") for name in self.body_names
                if any(True for _ in getattr(self.net, name).parameters())]


def wrap_torchvision_model(name: str, net: nn.Module, input_spec: InputSpec) -> Backbone:
    """``net`` behind the Backbone interface; a weights file fills ``net`` itself (a torchvision state dict)."""
    wrapped = TorchvisionNet(net)
    modules = wrapped.tap_modules()
    taps = [TapPoint(tap, path, depth) for depth, (tap, path) in enumerate(modules)]
    taps += [TapPoint(n, n, len(modules) + i) for i, n in enumerate(FINAL_TAPS)]
    return Backbone(name=name, weights_id="", input_spec=input_spec, model=wrapped, taps=taps,
                    default_taps=("features",), weights_target=net)
