"""``hf:<org/name>`` (or ``hf:/local/dir``): any Hugging Face encoder, text or speech, resolved
by its config's model type. Online the hub provides it; offline only the local cache or a local
directory can, and the error says so. The spec (taps, widths, window) comes from the config alone;
the networks are built by :mod:`transfuse.backbones.nets.text` and :mod:`transfuse.backbones.nets.audio`."""

from __future__ import annotations

import functools
from pathlib import Path

from transfuse.backbones.inputs import AudioSpec, TextSpec
from transfuse.backbones.spec import BackboneSpec, WeightsSource
from transfuse.backbones.text import text_tap_specs
from transfuse.config import SETTINGS
from transfuse.errors import WeightsUnavailableError

PREFIX = "hf:"
AUDIO_MODEL_TYPES = frozenset({"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio",
                               "unispeech", "unispeech-sat", "sew", "sew-d"})  # raw waveform in


@functools.lru_cache(maxsize=16)
def _identity(model_name: str) -> str:
    """``hf:<name>``; for a local directory the digest of its files instead of its path (changed
    weights, config or tokenizer never reuse cached features; a moved folder still matches)."""
    path = Path(model_name)
    if not path.is_dir():
        return f"hf:{model_name}"
    from transfuse.backbones.weights import file_sha256

    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt",
                                                                            ".model"))
    return "hf-dir:" + ",".join(f"{p.name}={file_sha256(str(p))[:16]}" for p in files)


@functools.lru_cache(maxsize=16)  # every command resolves its backbone several times; read the config once
def hf_spec(name: str) -> BackboneSpec:
    """The spec of a Hugging Face encoder; its modality comes from the config (no weights loaded)."""
    model_name = name[len(PREFIX):]
    try:
        from transformers import AutoConfig
    except ImportError:
        raise WeightsUnavailableError("hf: backbones need transformers: pip install 'transfuse[text]'") from None
    try:
        config = AutoConfig.from_pretrained(model_name, local_files_only=SETTINGS.offline)
    except (OSError, ValueError) as exc:
        where = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache; download it once online "
                 "or pass a local model directory as hf:/path/to/model") if SETTINGS.offline else str(exc)[:200]
        raise WeightsUnavailableError(f"cannot resolve hf:{model_name}: {where}") from None
    if getattr(config, "is_encoder_decoder", False):
        raise WeightsUnavailableError(f"hf:{model_name} is an encoder-decoder model ({config.model_type}); transfuse "
                                      f"taps encoder-only text models (BERT-like) and raw-waveform speech encoders")
    local = Path(model_name).is_dir()
    weights = WeightsSource(id=_identity(model_name), origin="local directory" if local else "Hugging Face hub",
                            get="" if local else "network access (or a local directory as hf:/path/to/model)")
    taps = text_tap_specs(config.num_hidden_layers, config.hidden_size)
    if config.model_type in AUDIO_MODEL_TYPES:
        return BackboneSpec(name=name, build=functools.partial(_build_audio, name, model_name),
                            input_spec=AudioSpec(16000, 400), taps=taps, weights=weights, modality="audio",
                            family="hf-audio", description=f"Hugging Face speech encoder ({config.model_type})",
                            license="see the model card", offline=local)
    spec = TextSpec(tokenizer=model_name, max_tokens=512)
    return BackboneSpec(name=name, build=functools.partial(_build_text, name, model_name, spec),
                        input_spec=spec, taps=taps, weights=weights, modality="text", family="hf-text",
                        description=f"Hugging Face text encoder ({config.model_type})", license="see the model card",
                        offline=local)


def _build_audio(name: str, model_name: str, pretrained: bool):
    from transfuse.backbones.nets.audio import build_hf_audio_backbone

    return build_hf_audio_backbone(name, model_name, pretrained)


def _build_text(name: str, model_name: str, spec: TextSpec, pretrained: bool):
    from transfuse.backbones.nets.text import build_text_backbone

    return build_text_backbone(name, model_name, pretrained, spec)


RESOLVERS = {PREFIX: hf_spec}
