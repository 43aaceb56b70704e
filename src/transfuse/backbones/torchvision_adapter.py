"""``torchvision:<name>``: torchvision's classification CNNs as backbones.

The network's children up to its pooling and classifier are the body (each a tap; a ``features``
or ``layers`` sequence contributes its stages: ``features.0``, ...); the rest is the head. Pretrained
weights are torchvision's default ones, downloaded by torchvision when the network allows (never
offline); ``--weights FILE`` takes a torchvision state dict (``.pth``, ``.safetensors``).
Transformers (vit, swin, maxvit) and networks whose forward is not a plain sequence (densenet,
googlenet, inception, squeezenet) are refused with the timm name to use instead.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from transfuse.backbones.base import FINAL_TAPS, Backbone, TapPoint
from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, WeightsSource
from transfuse.config import SETTINGS
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError

PREFIX = "torchvision:"
FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "vgg", "alexnet", "mobilenet_v2", "mobilenet_v3",
            "efficientnet", "convnext", "mnasnet", "shufflenet")
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


def _weights_enum(model_name: str):
    from torchvision import models

    try:
        return models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _input_spec(weights) -> InputSpec:
    if weights is None:
        return InputSpec(size=224, crop_pct=0.875, interpolation="bilinear")
    tf = weights.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    return InputSpec(size=crop, crop_pct=crop / resize, mean=tuple(tf.mean), std=tuple(tf.std),
                     interpolation=str(tf.interpolation.value))


@functools.lru_cache(maxsize=16)
def torchvision_spec(name: str) -> BackboneSpec:
    """The spec of ``torchvision:<model>`` (taps from the architecture built without weights)."""
    from torchvision import models

    model_name = name[len(PREFIX):]
    if model_name not in models.list_models(module=models):
        raise UnknownBackboneError(f"torchvision has no classification model {model_name!r}; list them with "
                                   f"`python -c \"import torchvision; print(torchvision.models.list_models())\"`")
    if not model_name.startswith(FAMILIES):
        raise UnknownBackboneError(f"torchvision:{model_name} is not supported as a backbone (its forward is not a "
                                   f"plain sequence of stages); use its timm: version instead, e.g. "
                                   f"timm:{model_name} (timm has the same architectures, with tap points)")
    weights = _weights_enum(model_name)
    input_spec = _input_spec(weights)

    def build(pretrained: bool) -> Backbone:
        if pretrained and weights is None:
            raise WeightsUnavailableError(f"torchvision has no pretrained weights for {model_name}; use --weights FILE "
                                          f"or --weights random")
        if pretrained and SETTINGS.offline:
            raise WeightsUnavailableError(f"{name} needs torchvision's weights from the internet, but offline mode is on "
                                          f"(HF_HUB_OFFLINE); pass --weights FILE (a torchvision .pth) or --weights random")
        try:
            net = models.get_model(model_name, weights=weights if pretrained else None)
        except Exception as exc:  # download and network errors come in many types
            if not pretrained:
                raise
            raise WeightsUnavailableError(f"could not download torchvision's weights for {model_name} "
                                          f"({type(exc).__name__}: {str(exc)[:150]}); pass --weights FILE") from None
        wrapped = TorchvisionNet(net)
        modules = wrapped.tap_modules()
        taps = [TapPoint(tap, path, depth) for depth, (tap, path) in enumerate(modules)]
        taps += [TapPoint(n, n, len(modules) + i) for i, n in enumerate(FINAL_TAPS)]
        return Backbone(name=name, weights_id="", input_spec=input_spec, model=wrapped, taps=taps,
                        default_taps=("features",), weights_target=net)

    from transfuse.backbones.timm_adapter import declared_taps

    architecture = build(False)
    identity = f"torchvision:{type(weights).__name__}.{weights.name}" if weights is not None else f"torchvision:{model_name}"
    return BackboneSpec(
        name=name, build=build, input_spec=input_spec, taps=declared_taps(architecture),
        weights=WeightsSource(id=identity, origin="torchvision (downloaded)", get="network access, or --weights FILE"),
        family="torchvision", description=f"torchvision {model_name} (pretrained weights downloaded by torchvision)",
        license="see torchvision's model documentation",
        params=sum(p.numel() for p in architecture.model.parameters()), offline=False)


RESOLVERS = {PREFIX: torchvision_spec}
