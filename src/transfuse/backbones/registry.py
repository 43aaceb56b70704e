"""One front door for backbones: ``create_backbone(name, weights=...)``.

Registered names (``efficientnet_lite0``...) carry weights installed from packages; any
``timm:<name>`` is resolved on the fly. ``weights`` is ``"pretrained"`` (default),
``"random"`` (seeded random init: the no-transfer baseline) or a path to a weights file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from transfuse.backbones.base import Backbone, InputSpec, file_sha256
from transfuse.errors import UnknownBackboneError, WeightsUnavailableError

RANDOM_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """What is known about a backbone without building it."""

    name: str
    build: Callable[[str], Backbone]  # weights ("pretrained" | "random" | path) -> Backbone
    input_spec: InputSpec
    weights_id: str  # identity of the pretrained weights
    description: str = ""
    offline: bool = True  # pretrained weights available without network
    modality: str = "image"  # what items are: "image" paths, "text" strings, "audio" paths
    trainable: bool = True  # False: frozen (ONNX, numpy), no fine-tuning and no random-weights twin
    fitted: bool = False  # True: learned from the training split (tfidf), the pipeline's first step, no cache

    def weights_identity(self, weights: str) -> str:
        """Identity string of the given weights choice (part of every cache key)."""
        if weights == "pretrained":
            return self.weights_id
        if weights == "random":
            return f"{self.name}:random-seed{RANDOM_SEED}"
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights must be 'pretrained', 'random' or a weights file; {weights!r} is none of these"
            )
        return f"file:{file_sha256(str(path))}"


_REGISTRY: dict[str, BackboneSpec] = {}
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "speech_embedding"}


def default_backbone(modality: str) -> str:
    """The built-in backbone used when none is named, per modality ("image", "text", "audio")."""
    return DEFAULT_BACKBONES[modality]


def check_modality(backbones: list[str], modality: str) -> None:
    """Raise a clear error when a backbone cannot read this kind of data."""
    for name in backbones:
        reads = get_spec(name).modality
        if reads != modality:
            what = {"image": "images", "audio": "audio clips"}.get(reads, reads)
            raise UnknownBackboneError(f"backbone {name!r} reads {what} but the data is {modality}; use "
                                       f"--backbone {DEFAULT_BACKBONES[modality]} or another {modality} backbone "
                                       f"(see `transfuse backbones`)")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (later registrations replace earlier ones)."""
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[BackboneSpec]:
    """Registered backbones, by name."""
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_spec(name: str) -> BackboneSpec:
    """Resolve a backbone name to its spec without building the network.

    >>> get_spec("efficientnet_lite0").input_spec.size  # doctest: +SKIP
    224
    """
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm:"):
        from transfuse.backbones.timm_adapter import timm_spec

        return timm_spec(name[len("timm:"):])
    if name.startswith("hf:"):
        from transfuse.backbones.hub import hf_spec

        return hf_spec(name[len("hf:"):])
    known = ", ".join(sorted(_REGISTRY))
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; built in: {known}; or any timm model as timm:<name>, any Hugging Face "
        f"text or speech encoder as hf:<org/name> or hf:/local/dir "
        f"(see `transfuse backbones`)"
    )


def create_backbone(name: str, weights: str = "pretrained", device: str | None = None) -> Backbone:
    """Build a backbone in eval mode with its tap points and preprocessing.

    >>> bb = create_backbone("efficientnet_lite0")  # doctest: +SKIP
    >>> bb.tap_names[-2:]  # doctest: +SKIP
    ['features', 'logits']
    """
    spec = get_spec(name)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            backbone = spec.build(weights)
    else:
        spec.weights_identity(weights)  # validates a path early
        backbone = spec.build(weights)
    backbone.weights_id = spec.weights_identity(weights)
    backbone.model.eval()
    if device:
        backbone.model.to(device)
    return backbone


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from transfuse.backbones import audio, dinov2, efficientnet_lite, text, tfidf, tiny  # noqa: F401  (register on import)
