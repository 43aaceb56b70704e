"""Backbones: a registry with one front door and one adapter per family."""

from transfuse.backbones.base import Backbone, InputSpec, TapPoint
from transfuse.backbones.registry import (
    BackboneSpec,
    check_modality,
    create_backbone,
    default_backbone,
    get_spec,
    list_backbones,
    register_backbone,
)

__all__ = [
    "Backbone",
    "BackboneSpec",
    "InputSpec",
    "TapPoint",
    "check_modality",
    "create_backbone",
    "default_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
]
