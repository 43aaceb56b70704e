"""``hf:<org/name>`` (or ``hf:/local/dir``): any Hugging Face encoder, text or speech, resolved
by its config's model type. Online the hub provides it; offline only the local cache or a local
directory can, and the error says so."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from transfuse.backbones.registry import BackboneSpec
from transfuse.config import SETTINGS
from transfuse.errors import WeightsUnavailableError

AUDIO_MODEL_TYPES = frozenset({"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio",
                               "unispeech", "unispeech-sat", "sew", "sew-d"})  # raw waveform in


@lru_cache(maxsize=16)
def _identity(model_name: str) -> str:
    """``hf:<name>``; for a local directory the digest of its files instead of its path (changed
    weights, config or tokenizer never reuse cached features; a moved folder still matches)."""
    path = Path(model_name)
    if not path.is_dir():
        return f"hf:{model_name}"
    from transfuse.backbones.base import file_sha256

    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt",
                                                                            ".model"))
    return "hf-dir:" + ",".join(f"{p.name}={file_sha256(str(p))[:16]}" for p in files)


@lru_cache(maxsize=16)  # every command resolves its backbone several times; read the config once
def hf_spec(model_name: str) -> BackboneSpec:
    """The spec of a Hugging Face encoder; its modality comes from the config (no weights loaded)."""
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
    name = f"hf:{model_name}"
    if getattr(config, "is_encoder_decoder", False):
        raise WeightsUnavailableError(f"hf:{model_name} is an encoder-decoder model ({config.model_type}); transfuse "
                                      f"taps encoder-only text models (BERT-like) and raw-waveform speech encoders")
    if config.model_type in AUDIO_MODEL_TYPES:
        from transfuse.backbones.audio import AudioSpec, build_hf_audio_backbone

        return BackboneSpec(name=name, build=lambda weights: build_hf_audio_backbone(name, model_name, weights),
                            input_spec=AudioSpec(16000, 400), weights_id=_identity(model_name),
                            description=f"Hugging Face speech encoder ({config.model_type})",
                            offline=Path(model_name).is_dir(), modality="audio")
    from transfuse.backbones.text import TextSpec, build_text_backbone

    spec = TextSpec(tokenizer=model_name, max_tokens=512)
    return BackboneSpec(name=name, build=lambda weights: build_text_backbone(name, model_name, weights, spec),
                        input_spec=spec, weights_id=_identity(model_name),
                        description=f"Hugging Face text encoder ({config.model_type})",
                        offline=Path(model_name).is_dir(), modality="text")
