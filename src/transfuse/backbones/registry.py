"""One front door for backbones: ``get_spec(name)`` (data, nothing built) and
``create_backbone(name, weights=...)`` (the network).

Specs come from the ``BACKBONES`` tuples of the built-in adapter modules listed below, then from
modules named in the ``transfuse.backbones`` entry-point group (see :mod:`transfuse.plugins`), then
from :func:`register_backbone` calls. Prefixed names resolve on the fly: ``timm:<name>``, ``torchvision:<name>``, ``hf:<org/name>``,
``keras:<model file>``, ``local:<folder>`` (a network transfuse trained) and ``small_cnn@<px>``.
``weights`` is ``"pretrained"`` (default), ``"random"`` (seeded random init: the no-transfer
baseline) or a path to a weights file, resolved the same way for every family
(:func:`~transfuse.backbones.weights.resolve_weights`).

Reading specs imports the listed modules, which import no torch; only ``create_backbone`` (through a
spec's ``build``) and resolving ``timm:``/``torchvision:``/``hf:``/``keras:``/``local:`` names do.
"""

from __future__ import annotations

import functools
import importlib
import logging

from transfuse.backbones.spec import BackboneSpec
from transfuse.backbones.weights import RANDOM_SEED, load_weights_file, resolve_weights
from transfuse.errors import UnknownBackboneError
from transfuse.plugins import declared

BUILTIN_MODULES = (
    "transfuse.backbones.efficientnet_lite",
    "transfuse.backbones.dinov2",
    "transfuse.backbones.text",
    "transfuse.backbones.audio",
    "transfuse.backbones.vgg",
    "transfuse.backbones.small_cnn",
    "transfuse.backbones.rnn",
    "transfuse.backbones.tiny",
)
RESOLVER_MODULES = ("transfuse.backbones.timm_adapter", "transfuse.backbones.hub", "transfuse.backbones.keras_model",
                    "transfuse.backbones.torchvision_adapter", "transfuse.backbones.small_cnn",
                    "transfuse.backbones.rnn",
                    "transfuse.backbones.local")  # name prefix -> spec
ENTRY_POINTS = "transfuse.backbones"
DEFAULT_BACKBONES = {"image": "efficientnet_lite0", "text": "minilm_l6", "audio": "speech_embedding", "sequence": "gru"}
_REGISTERED: dict[str, BackboneSpec] = {}  # register_backbone at run time
log = logging.getLogger(__name__)


@functools.cache
def _declared() -> dict[str, BackboneSpec]:
    """Built-in specs first; a plugin's spec whose name is taken is reported and left out."""
    specs: dict[str, BackboneSpec] = {}
    for spec in declared("BACKBONES", BUILTIN_MODULES, ENTRY_POINTS):
        if spec.name in specs:
            log.warning("backbone %r of a plugin left out: the name is taken (%s)", spec.name,
                        specs[spec.name].description)
        else:
            specs[spec.name] = spec
    return specs


@functools.cache
def _resolvers() -> dict:
    found = {}
    for module in RESOLVER_MODULES:
        found.update(importlib.import_module(module).RESOLVERS)
    return found


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone for this process (later registrations replace earlier ones); to ship one,
    declare it in a module's ``BACKBONES`` and name the module in the ``transfuse.backbones``
    entry-point group instead (docs/extending.md)."""
    _REGISTERED[spec.name] = spec
    return spec


def list_backbones() -> list[BackboneSpec]:
    """Declared and registered backbones, by name."""
    specs = {**_declared(), **_REGISTERED}
    return [specs[k] for k in sorted(specs)]


def get_spec(name: str) -> BackboneSpec:
    """Resolve a backbone name to its spec without building the network.

    >>> get_spec("efficientnet_lite0").input_spec.size
    224
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    specs = _declared()
    if name in specs:
        return specs[name]
    for prefix, resolve in _resolvers().items():
        if name.startswith(prefix):
            return resolve(name)
    from transfuse.parts import part_kinds

    fitted = part_kinds("featurizer").get(name)
    if getattr(fitted, "fitted", False):
        raise UnknownBackboneError(f"{name} is fitted on the training data, not a network with layers: use it through "
                                   f"`transfuse fit DATA --backbone {name}` or transfuse.featurizers.make_featurizer")
    known = ", ".join(sorted({*specs, *_REGISTERED}))
    raise UnknownBackboneError(
        f"unknown backbone {name!r}; built in: {known}; or timm:<name>, torchvision:<name>, hf:<org/name> (or "
        f"hf:/local/dir), keras:<model file>, local:<folder from train-source> (see `transfuse backbones`)")


def default_backbone(modality: str) -> str:
    """The built-in backbone used when none is named, per modality ("image", "text", "audio")."""
    return DEFAULT_BACKBONES[modality]


def check_modality(backbones: list[str], modality: str) -> None:
    """Raise a clear error when a backbone cannot read this kind of data."""
    for name in backbones:
        reads = get_spec(name).modality
        if reads != modality:
            what = {"image": "images", "audio": "audio clips", "sequence": "frame sequences"}.get(reads, reads)
            raise UnknownBackboneError(f"backbone {name!r} reads {what} but the data is {modality}; use "
                                       f"--backbone {DEFAULT_BACKBONES[modality]} or another {modality} backbone "
                                       f"(see `transfuse backbones`)")


def create_backbone(name: str, weights: str = "pretrained", device: str | None = None):
    """Build a backbone in eval mode with its tap points and preprocessing: pretrained weights,
    the architecture seeded with ``RANDOM_SEED`` (``random``), or a weights file loaded strictly.

    >>> bb = create_backbone("tiny_cnn")
    >>> bb.tap_names[-2:]
    ['features', 'logits']
    """
    import torch

    spec = get_spec(name)
    resolved = resolve_weights(spec, weights)  # a bad choice fails before anything is built
    if resolved.kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            backbone = spec.build(False)
    else:
        backbone = spec.build(resolved.kind == "pretrained")
        if resolved.kind == "file" and backbone.file_loader is not None:
            backbone.file_loader(resolved.path)  # a family's own formats (Keras .h5 for VGG)
        elif resolved.kind == "file":
            load_weights_file(backbone.weights_target or backbone.model, resolved.path)
    backbone.weights_id = resolved.identity
    backbone.model.eval()
    if device:
        backbone.model.to(device)
    return backbone
