"""timm models: tap points from ``feature_info`` plus the final feature map and logits; any
``timm:<name>`` resolves to a spec, its weights downloaded from the hub only when built.

Importing this module imports neither torch nor timm; resolving a ``timm:`` name does (its taps
come from the architecture built without weights).
"""

from __future__ import annotations

from functools import lru_cache

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, WeightsSource, declared_taps
from transfuse.config import SETTINGS
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError

PREFIX = "timm:"


def input_spec_from_cfg(cfg) -> InputSpec:
    """InputSpec from a timm ``PretrainedCfg`` (or its dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    size = get("input_size", (3, 224, 224))[-1]
    return InputSpec(
        size=int(size),
        crop_pct=float(get("crop_pct", 0.875) or 1.0),
        mean=tuple(float(v) for v in get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in get("std", (0.229, 0.224, 0.225))),
        interpolation=str(get("interpolation", "bicubic") or "bicubic"),
    )


@lru_cache(maxsize=16)
def timm_spec(name: str) -> BackboneSpec:
    """The spec of ``timm:<model>``: its taps come from the architecture built without weights (no
    download); pretrained weights are downloaded from the hub only when built, and never offline."""
    import timm

    from transfuse.backbones.nets.base import wrap_timm_model

    model_name = name[len(PREFIX):]
    if not timm.is_model(model_name):
        raise UnknownBackboneError(
            f"timm has no model {model_name!r}; list them with "
            f"`python -c \"import timm; print(timm.list_models('*{model_name[:6]}*'))\"`")
    cfg = timm.get_pretrained_cfg(model_name)
    input_spec = input_spec_from_cfg(cfg) if cfg is not None else InputSpec()
    hub_id = (getattr(cfg, "hf_hub_id", None) or model_name) if cfg is not None else model_name

    def build(pretrained: bool):
        if pretrained and SETTINGS.offline:
            raise WeightsUnavailableError(
                f"{name} needs weights from the Hugging Face hub, but offline mode is on (HF_HUB_OFFLINE); unset it "
                f"with network access, pass --weights FILE, or --weights random for random init")
        try:
            model = timm.create_model(model_name, pretrained=pretrained)
        except Exception as exc:  # hub and network errors come in many types
            if not pretrained:
                raise
            raise WeightsUnavailableError(
                f"could not download pretrained weights for {name} ({type(exc).__name__}: {exc}); "
                f"check the network, pass --weights FILE, or --weights random") from None
        return wrap_timm_model(name, model, input_spec)

    architecture = build(False)
    return BackboneSpec(
        name=name, build=build, input_spec=input_spec, taps=declared_taps(architecture),
        weights=WeightsSource(id=f"timm:{hub_id}", origin=f"Hugging Face hub ({hub_id})", get="network access"),
        family="timm", description=f"timm model {model_name} (pretrained weights from the hub)",
        license=str(getattr(cfg, "license", "") or "see the model card"),
        params=sum(p.numel() for p in architecture.model.parameters()), offline=False)


RESOLVERS = {PREFIX: timm_spec}
