"""What is known about a backbone without building it: the spec an adapter module declares.

Specs are data. Listing backbones, validating a layer name, showing tap shapes or planning an
engine never needs the network or its weights; only ``build`` does. An adapter module lists its
specs in ``BACKBONES = (...)`` and imports no registry (see :mod:`transfuse.plugins`); its ``build``
imports the network (from :mod:`transfuse.backbones.nets`, where all torch code lives) when called.
This module imports no network code, not even for type hints: the networks may then use the data
modules (inputs, weights) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transfuse.backbones.inputs import AudioSpec, InputSpec, SequenceSpec, TextSpec
from transfuse.errors import UnknownLayerError, WeightsUnavailableError


@dataclass(frozen=True)
class TapSpec:
    """A named place whose output can be pooled into features: its depth in the network and the
    shape of its output for one item (``(C, H, W)`` maps, ``(tokens, D)`` sequences, ``(D,)``)."""

    name: str
    depth: int
    shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        """Width after pooling: the channels of a map, the width of a token sequence or a vector."""
        return self.shape[-1] if len(self.shape) == 2 else self.shape[0]


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's pretrained weights come from and how to get them.

    ``id`` is their identity in every cache key; ``origin`` says where they come from (a package, a
    hub); ``get`` is the one command that installs them when missing; ``locate`` returns their path
    on this machine or raises :class:`WeightsUnavailableError` with that command; ``digest``, for
    weights any file of the right name could stand in for, returns the file's SHA-256, which then
    joins ``id`` in the identity."""

    id: str
    origin: str = ""
    get: str = ""
    locate: Callable[[], str] | None = None
    digest: Callable[[], str] | None = None

    def available(self) -> bool:
        """Whether the weights are on this machine (without loading them)."""
        if self.locate is None:
            return True
        try:
            self.locate()
            return True
        except WeightsUnavailableError:
            return False


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone as data: identity, input contract, tap points, weights, provenance; plus ``build``.

    ``build(pretrained)`` returns the network (a :class:`~transfuse.backbones.nets.base.Backbone`) with its
    pretrained weights loaded, or with none (``False``: the architecture alone, which the registry
    seeds for ``--weights random`` or fills from a weights file). ``network`` says what runs it:
    ``torch`` (trainable, every engine), ``onnx`` or ``numpy`` (frozen encoders run their own way).
    """

    name: str
    build: Callable[[bool], Any]  # -> transfuse.backbones.nets.base.Backbone
    input_spec: InputSpec | TextSpec | AudioSpec | SequenceSpec
    taps: tuple[TapSpec, ...]
    weights: WeightsSource
    modality: str = "image"  # what items are: "image" paths, "text" strings, "audio" paths, "sequence" .npy paths
    family: str = ""
    description: str = ""
    license: str = ""  # of the pretrained weights
    params: int | None = None  # parameter count of the network as built
    network: str = "torch"
    offline: bool = True  # pretrained weights available without network access
    default_taps: tuple[str, ...] = ("features",)
    extra: dict = field(default_factory=dict, compare=False)  # anything a family wants to keep

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps]

    @property
    def trainable(self) -> bool:
        """Whether the network can be fine-tuned and has a random-weights twin (a torch network)."""
        return self.network == "torch"

    def check_taps(self, names: list[str]) -> list[str]:
        """Validate tap names without building anything; the error lists the valid ones."""
        known = set(self.tap_names)
        bad = [n for n in names if n not in known]
        if bad:
            raise UnknownLayerError(f"backbone {self.name!r} has no layer {', '.join(map(repr, bad))}; available: "
                                    f"{', '.join(self.tap_names)} (see `transfuse layers {self.name}`)")
        return names


def declared_taps(backbone) -> tuple[TapSpec, ...]:
    """The tap specs of a built network (one dummy forward pass): how specs of families whose
    architecture is only known at run time (timm, torchvision, a trained folder) describe their taps."""
    shapes = backbone.tap_shapes()
    return tuple(TapSpec(t.name, t.depth, tuple(shapes[t.name])) for t in backbone.taps)
