"""``torchvision:<name>``: torchvision's classification CNNs as backbones.

The network's children up to its pooling and classifier are the body (each a tap; a ``features``
or ``layers`` sequence contributes its stages: ``features.0``, ...); the rest is the head. Pretrained
weights are torchvision's default ones, downloaded by torchvision when the network allows (never
offline); ``--weights FILE`` takes a torchvision state dict (``.pth``, ``.safetensors``).
Transformers (vit, swin, maxvit) and networks whose forward is not a plain sequence (densenet,
googlenet, inception, squeezenet) are refused with the timm name to use instead.

Importing this module imports neither torch nor torchvision; resolving a ``torchvision:`` name does.
The wrapping network: :mod:`transfuse.backbones.nets.torchvision_adapter`.
"""

from __future__ import annotations

import functools

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, WeightsSource, declared_taps
from transfuse.config import SETTINGS
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError

PREFIX = "torchvision:"
FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet", "vgg", "alexnet", "mobilenet_v2", "mobilenet_v3",
            "efficientnet", "convnext", "mnasnet", "shufflenet")


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

    from transfuse.backbones.nets.torchvision_adapter import wrap_torchvision_model

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

    def build(pretrained: bool):
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
        return wrap_torchvision_model(name, net, input_spec)

    architecture = build(False)
    identity = f"torchvision:{type(weights).__name__}.{weights.name}" if weights is not None else f"torchvision:{model_name}"
    return BackboneSpec(
        name=name, build=build, input_spec=input_spec, taps=declared_taps(architecture),
        weights=WeightsSource(id=identity, origin="torchvision (downloaded)", get="network access, or --weights FILE"),
        family="torchvision", description=f"torchvision {model_name} (pretrained weights downloaded by torchvision)",
        license="see torchvision's model documentation",
        params=sum(p.numel() for p in architecture.model.parameters()), offline=False)


RESOLVERS = {PREFIX: torchvision_spec}
