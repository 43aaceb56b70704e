"""``local:<DIR>``: a network transfuse trained, used as a source. ``DIR`` is a model directory written by
``transfuse train-source`` or ``transfuse finetune`` (an image or sequence network); its architecture,
input size, classes and weights come from the directory, its taps are the architecture's plus
``logits`` (the source task's output layer). The identity of its weights is the SHA-256 of the
directory's weights file, so features of a retrained source are never mixed with old ones.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.spec import BackboneSpec, WeightsSource, declared_taps
from transfuse.errors import ModelDirError, UnknownBackboneError

PREFIX = "local:"


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    """What a model directory says about its network."""

    arch: str  # the backbone it was built from (small_cnn, vgg11, timm:resnet18, gru, ...)
    modality: str
    image_size: int
    classes: tuple[str, ...]
    state: dict  # array name -> numpy array (the network's state dict)
    digest: str  # SHA-256 of the weights file


def read_trained(folder: Path) -> TrainedNetwork:
    """The network part of a model directory (format 4, or converted from older ones)."""
    from transfuse.backbones.weights import file_digest
    from transfuse.modeldir.files import WEIGHTS, read_arrays, read_config
    from transfuse.modeldir.legacy import migrate

    config = read_config(folder)
    if config["format_version"] < 4:
        config, arrays = migrate(config, folder)
    else:
        arrays = read_arrays(folder / WEIGHTS)
    parts = [p for p in config.get("parts", []) if isinstance(p, dict) and p.get("kind") == "finetuned"]
    if not parts:
        kinds = ", ".join(str(p.get("kind")) for p in config.get("parts", []) if isinstance(p, dict))
        raise UnknownBackboneError(f"local:{folder} holds no trained network (its parts: {kinds or 'none'}); local: "
                                   f"takes a folder written by `transfuse train-source` or `transfuse finetune`")
    part = parts[0]
    meta = part.get("meta", {})
    if meta.get("modality", "image") not in ("image", "sequence"):
        raise UnknownBackboneError(f"local:{folder} is a fine-tuned {meta.get('modality')} model; local: reads image "
                                   f"and sequence networks for now")
    settings = meta.get("finetune", {})
    prefix = f"{part['name']}."
    state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    arch = meta.get("architecture") or settings.get("backbone")  # fine-tuned from a local: source: its architecture
    return TrainedNetwork(str(arch), meta.get("modality", "image"), int(settings.get("image_size") or 128),
                          tuple(meta.get("classes", [])), state, file_digest(str(folder / WEIGHTS)))


def local_spec(name: str) -> BackboneSpec:
    """The spec of ``local:<DIR>``: tap shapes from one dummy pass of the rebuilt network. Read again
    whenever the folder's weights file changes (a source retrained into the same folder)."""
    from transfuse.backbones.weights import file_stamp
    from transfuse.modeldir.files import WEIGHTS

    folder = Path(name[len(PREFIX):]).expanduser().resolve()
    try:
        stamp = file_stamp(folder / WEIGHTS)
    except OSError:
        stamp = None  # read_trained says what is missing
    return _local_spec(name, folder, stamp)


@functools.lru_cache(maxsize=8)
def _local_spec(name: str, folder: Path, stamp) -> BackboneSpec:
    from transfuse.backbones.registry import get_spec

    try:
        trained = read_trained(folder)
    except ModelDirError as exc:
        raise UnknownBackboneError(f"local: {exc}") from None
    arch = get_spec(trained.arch)
    input_spec = arch.input_spec
    if isinstance(input_spec, InputSpec):  # images: the size it was trained at, the whole image
        input_spec = dataclasses.replace(input_spec, size=trained.image_size, crop_pct=1.0)

    def build(pretrained: bool):
        return _build(name, arch.name, input_spec, trained if pretrained else None, len(trained.classes))

    network = build(True)
    taps = declared_taps(network)
    return BackboneSpec(name=name, build=build, input_spec=input_spec, taps=taps,
                        weights=WeightsSource(id=f"local:{trained.digest}", origin=f"trained by transfuse ({folder})"),
                        family=f"own ({arch.family or arch.name})",
                        description=f"{trained.arch} trained on {len(trained.classes)} source classes "
                                    f"({', '.join(trained.classes[:4])}{', ...' if len(trained.classes) > 4 else ''})",
                        license="yours", params=sum(p.numel() for p in network.model.parameters()),
                        modality=arch.modality, default_taps=arch.default_taps,
                        extra={**arch.extra, "architecture": trained.arch})


def _build(name: str, arch: str, input_spec: InputSpec, trained: TrainedNetwork | None, n_classes: int):
    import torch

    from transfuse.backbones.nets.base import TapPoint
    from transfuse.backbones.registry import create_backbone

    backbone = create_backbone(arch, weights="random")
    backbone.model.reset_classifier(n_classes)
    if trained is not None:
        try:
            backbone.model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in trained.state.items()})
        except RuntimeError as exc:
            raise ModelDirError(f"the network in {name} does not fit {arch} ({str(exc)[:200]})") from None
    taps = list(backbone.taps)
    if not any(t.name == "logits" for t in taps):
        taps.append(TapPoint("logits", "logits", max(t.depth for t in taps) + 1))
    return dataclasses.replace(backbone, name=name, input_spec=input_spec, taps=taps, _shapes=None,
                               file_loader=None, weights_target=None)


RESOLVERS = {PREFIX: local_spec}
