"""Adapter for timm models: tap points from ``feature_info`` plus the final feature map and logits."""

from __future__ import annotations

from torch import nn

from transfuse.backbones.base import FINAL_TAPS, Backbone, InputSpec, TapPoint, load_weights_file
from transfuse.backbones.registry import BackboneSpec
from transfuse.config import SETTINGS
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError


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


def wrap_timm_model(name: str, model: nn.Module, weights_id: str, input_spec: InputSpec,
                    modules: list[tuple[str, str]] | None = None) -> Backbone:
    """Wrap a timm model; ``modules`` lists ``(tap name, module path)`` in depth order,
    defaulting to the model's ``feature_info``."""
    if modules is None:
        info = getattr(model, "feature_info", None) or []
        modules = [(i["module"], i["module"]) for i in info]
    taps = [TapPoint(tap, path, depth) for depth, (tap, path) in enumerate(modules)]
    taps += [TapPoint(n, n, len(modules) + i) for i, n in enumerate(FINAL_TAPS)]
    return Backbone(
        name=name,
        weights_id=weights_id,
        input_spec=input_spec,
        model=model,
        taps=taps,
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
    )


def timm_spec(model_name: str) -> BackboneSpec:
    """A spec for ``timm:<model_name>``, downloading pretrained weights only when built."""
    import timm

    if not timm.is_model(model_name):
        raise UnknownBackboneError(
            f"timm has no model {model_name!r}; list them with "
            f"`python -c \"import timm; print(timm.list_models('*{model_name[:6]}*'))\"`"
        )
    cfg = timm.get_pretrained_cfg(model_name)
    input_spec = input_spec_from_cfg(cfg) if cfg is not None else InputSpec()
    hub_id = (getattr(cfg, "hf_hub_id", None) or model_name) if cfg is not None else model_name
    full_name = f"timm:{model_name}"

    def build(weights: str) -> Backbone:
        pretrained = weights == "pretrained"
        if pretrained and SETTINGS.offline:
            raise WeightsUnavailableError(
                f"{full_name} needs weights from the Hugging Face hub, but offline mode is on "
                f"(HF_HUB_OFFLINE); unset it with network access, pass --weights FILE, "
                f"or --weights random for random init"
            )
        try:
            model = timm.create_model(model_name, pretrained=pretrained)
        except Exception as exc:  # hub and network errors come in many types
            if not pretrained:
                raise
            raise WeightsUnavailableError(
                f"could not download pretrained weights for {full_name} ({type(exc).__name__}: {exc}); "
                f"check the network, pass --weights FILE, or --weights random"
            ) from None
        if weights not in ("pretrained", "random"):
            load_weights_file(model, weights)
        return wrap_timm_model(full_name, model, "", input_spec)

    return BackboneSpec(
        name=full_name,
        build=build,
        input_spec=input_spec,
        weights_id=f"timm:{hub_id}",
        description=f"timm model {model_name} (pretrained weights from the hub)",
        offline=False,
    )
