"""One weights resolver for every backbone family: ``pretrained`` | ``random`` | a weights file.

``resolve_weights`` turns the user's choice into what it means for one backbone (the identity that
goes into cache keys, with a file's SHA-256 recorded), and refuses choices a backbone cannot take
(random weights of a frozen ONNX encoder) before anything is built. ``load_weights_file`` reads a
state dict safely (safetensors, or ``torch.load(weights_only=True)``) into a network, strictly.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.spec import BackboneSpec

RANDOM_SEED = 0  # seed of every --weights random network
_BASELINE = {"text": "--backbone tfidf", "audio": "--backbone logmel"}
_NETWORK = {"onnx": "ONNX", "numpy": "numpy", "keras": "Keras"}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights choice for one backbone: ``kind`` (pretrained, random, file), the file and its
    SHA-256 when it is one, and the identity every cache key and saved model records."""

    kind: str
    identity: str
    path: str | None = None
    sha256: str | None = None


def resolve_weights(spec: BackboneSpec, weights: str) -> ResolvedWeights:
    """What ``weights`` means for ``spec``, or a clear error (checked before anything is built).

    >>> from transfuse.backbones import get_spec
    >>> resolve_weights(get_spec("tiny_cnn"), "random").identity
    'tiny_cnn:random-seed0'
    """
    if weights == "pretrained":
        digest = spec.weights.digest() if spec.weights.digest is not None else ""
        return ResolvedWeights("pretrained", f"{spec.weights.id}:{digest[:16]}" if digest else spec.weights.id)
    if not spec.trainable:
        raise WeightsUnavailableError(
            f"{spec.name} is a frozen {_NETWORK.get(spec.network, spec.network)} model: it has no random-weights or "
            f"weights-file version; compare against {_BASELINE.get(spec.modality, 'another backbone')} (no transfer)")
    if weights == "random":
        return ResolvedWeights("random", f"{spec.name}:random-seed{RANDOM_SEED}")
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights must be 'pretrained', 'random' or a weights file; {weights!r} is "
                                      f"none of these")
    digest = file_sha256(str(path))
    return ResolvedWeights("file", f"file:{digest}", str(path.resolve()), digest)


def file_stamp(path: str | Path) -> tuple[str, int, int]:
    """``(resolved path, size, mtime_ns)``: what tells a changed file apart, for caches keyed on it."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def file_digest(path: str) -> str:
    """:func:`file_sha256`, hashed once per process for a file that has not changed."""
    return _digest(*file_stamp(path))


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (the identity of local weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_weights_file(model, path: str):
    """Load a ``.safetensors`` or ``.pth``/``.pt`` state dict strictly into ``model``.

    Checkpoints that wrap the weights under ``state_dict`` or ``model`` are unwrapped.
    Unreadable files and mismatched keys or shapes raise :class:`WeightsUnavailableError`.
    """
    import torch

    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for broken files
        raise WeightsUnavailableError(f"cannot read weights file {path}: {why_unloadable(exc)}; pass a state dict saved with "
                                      f"torch.save(model.state_dict()) or safetensors") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise WeightsUnavailableError(f"weights file {path} does not fit this architecture "
                                      f"({' '.join(first[:2])[:300]}); check --backbone") from None
    return model


def why_unloadable(exc: Exception) -> str:
    """One line on why a weights file was refused. A pickle holding more than tensors is refused on
    purpose (loading it could run code); torch's own text suggests turning that check off, which
    transfuse never does, so it is not repeated."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return "it is a pickle with Python objects besides tensors, which transfuse does not load (it could run code)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def architecture_only(name: str, arch: str) -> Callable[[], str]:
    """``locate`` for an architecture without pretrained weights: always the error that says what to do."""

    def locate() -> str:
        raise WeightsUnavailableError(f"{name} has no pretrained weights; use --weights random or a weights file, or "
                                      f"train it on a source task: transfuse train-source DATA --arch {arch}")

    return locate
