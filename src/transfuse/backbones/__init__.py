"""Backbones: specs declared as data by one adapter module per family, one front door to build them.

``get_spec(name)`` answers what a backbone is (input contract, taps and their shapes, weights and
where to get them) without building it; ``create_backbone(name, weights=...)`` builds it.

Layout: ``spec`` (BackboneSpec, TapSpec, WeightsSource), ``inputs`` (input contracts) and ``weights``
are the data; one spec module per family (``efficientnet_lite``, ``text``, ``audio``, ``vgg`` ...;
``timm_adapter``, ``hub``, ``keras_model`` ... resolve prefixed names) declares its backbones;
``registry`` finds them. None of these imports torch: the networks live in :mod:`transfuse.backbones.nets`,
imported by a spec's ``build`` (or by resolving a hub name, whose taps come from the architecture).
"""

from transfuse.backbones.inputs import AudioSpec, InputSpec, SequenceSpec, TextSpec
from transfuse.backbones.registry import (
    check_modality,
    create_backbone,
    default_backbone,
    get_spec,
    list_backbones,
    register_backbone,
)
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.backbones.weights import resolve_weights

__all__ = [
    "AudioSpec",
    "Backbone",
    "BackboneSpec",
    "InputSpec",
    "SequenceSpec",
    "TapPoint",
    "TapSpec",
    "TextSpec",
    "WeightsSource",
    "check_modality",
    "create_backbone",
    "default_backbone",
    "get_spec",
    "list_backbones",
    "register_backbone",
    "resolve_weights",
]


def __getattr__(name: str):
    """``Backbone`` and ``TapPoint`` (what ``build`` returns) load torch: imported on first use."""
    if name in ("Backbone", "TapPoint"):
        from transfuse.backbones.nets import base

        return getattr(base, name)
    raise AttributeError(f"module 'transfuse.backbones' has no attribute {name!r}")
