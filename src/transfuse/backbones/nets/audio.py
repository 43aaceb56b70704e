"""Audio encoders' networks: waveform in, frames out (per tap, with the number of frames that cover
real audio), pooled over time behind the Backbone interface. The specs: :mod:`transfuse.backbones.audio`
and ``hf:`` names (:mod:`transfuse.backbones.hub`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from transfuse.backbones.inputs import AudioSpec
from transfuse.backbones.nets.base import Backbone, TapPoint
from transfuse.backbones.nets.text import text_taps
from transfuse.backbones.weights import why_unloadable
from transfuse.config import default_workers
from transfuse.errors import WeightsUnavailableError
from transfuse.taps import check_pooling, pool_frames


def power_spectrum(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, center: bool) -> torch.Tensor:
    """``|STFT|^2`` of ``(B, S)`` waveforms, ``(B, n_fft // 2 + 1, T)`` (``center``: zero-padded by
    half a window at both ends). Under ONNX export the same transform is a strided convolution with
    windowed DFT kernels, since torch's ``stft`` does not export."""
    if not torch.onnx.is_in_onnx_export():
        return torch.stft(wave, n_fft, hop, window=window, center=center, pad_mode="constant",
                          return_complex=True).abs().pow(2)
    if center:
        wave = nn.functional.pad(wave, (n_fft // 2, n_fft // 2))
    # angles reduced to one turn in integers and taken in float64: float32 cos(6000 rad) is off by 4e-4
    turns = torch.outer(torch.arange(n_fft // 2 + 1), torch.arange(n_fft)) % n_fft
    angle = 2 * math.pi / n_fft * turns.double()
    kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window.cpu().double()[None]
    parts = nn.functional.conv1d(wave[:, None], kernels[:, None].to(wave), stride=hop)
    real, imag = parts.chunk(2, dim=1)
    return real**2 + imag**2


def pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows appended along dim 0 up to ``rows`` (unchanged when it has as many); the
    number of rows stays dynamic in an exported graph."""
    if not torch.onnx.is_in_onnx_export():
        return nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, max(0, rows - x.shape[0])))
    padded = torch.cat([x, x.new_zeros((rows, *x.shape[1:]))])
    return padded[: torch.clamp(torch.tensor(x.shape[0]), min=rows)]


class ClipTaps(nn.Module):
    """One clip ``(1, S)`` as decoded, any length, in; each tap's frames ``(1, T, D)`` out: the graph
    ``transfuse export`` builds on an encoder whose ``clip(wave)`` reads one unpadded clip."""

    def __init__(self, model: nn.Module, taps: list[str]) -> None:
        super().__init__()
        self.model, self.taps = model, taps

    def forward(self, wave: torch.Tensor) -> tuple:
        frames = self.model.clip(wave[0])
        return tuple(frames[tap][None] for tap in self.taps)


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
        """Decode + resample (in workers per transfuse.config.default_workers). Clips of similar duration are
        batched together and a batch holds at most ``batch_size`` x 10 s of padded audio, so one
        long recording never inflates a whole batch of short ones."""
        from torch.utils.data import DataLoader

        from transfuse.data.audio import durations
        from transfuse.data.datasets import AudioFiles, pad_batch

        if num_workers is None:
            num_workers = default_workers(len(items), device)
        if not items:
            return
        seconds = durations(items)
        groups: list[list[int]] = [[]]
        for i in sorted(range(len(items)), key=lambda i: seconds[i]):
            group = groups[-1]  # sorted ascending: clip i is the longest so far, padding is len x its length
            if group and (len(group) >= batch_size or (len(group) + 1) * seconds[i] > batch_size * 10.0):
                groups.append(group := [])
            group.append(i)
        yield from DataLoader(AudioFiles(items, self.input_spec.sample_rate), batch_sampler=groups,
                              num_workers=num_workers,
                              collate_fn=partial(pad_batch, min_samples=self.input_spec.min_samples))

    @torch.inference_mode()
    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str,
              runner=None) -> dict[str, torch.Tensor]:
        """Frames of every tap pooled over time: ``meanstd`` (mean and standard deviation, the
        default), ``avg`` or ``max``, counting only frames that cover real audio."""
        check_pooling(pooling, "audio")
        self.check_taps(taps)
        waves, lengths = inputs
        lengths = lengths[good]
        waves = waves[good][:, : max(int(lengths.max()), self.input_spec.min_samples)]
        out = self.model(waves.to(device), lengths.to(device))
        return {tap: pool_frames(*out[tap], pooling) for tap in taps}


# --- speech_embedding (ONNX) ---------------------------------------------------------------------

class OnnxSpeechEmbedding(nn.Module):
    """Runs the speech-embedding ONNX graph with ONNX Runtime (frozen: no parameters)."""

    input_name, output_name = "samples:0", "default"  # (N, S) in; (N, T, 1, 96) out

    def __init__(self, path: str, window: int, hop: int) -> None:
        """``window``: the samples one frame sees; ``hop``: the samples between frames."""
        super().__init__()
        from transfuse.onnxrt import onnx_session

        self.session, self.path = onnx_session(path), path
        self.window, self.hop = window, hop

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        frames = self.session.run([self.output_name], {self.input_name: waves.float().cpu().numpy()})[0][:, :, 0, :]
        valid = (lengths.clamp(min=self.window) - self.window) // self.hop + 1
        return {"features": (torch.from_numpy(frames).to(waves.device), valid.to(waves.device))}


def build_speech_embedding(input_spec: AudioSpec, path: str, window: int, hop: int) -> AudioBackbone:
    """The ONNX graph in ``path``, run by ONNX Runtime: one 96-d ``features`` frame per ``hop`` samples."""
    try:
        model = OnnxSpeechEmbedding(path, window, hop)
    except ImportError:
        raise WeightsUnavailableError("speech_embedding runs on ONNX Runtime: pip install onnxruntime") from None
    return AudioBackbone(name="speech_embedding", weights_id="", input_spec=input_spec, model=model,
                         taps=[TapPoint("features", "features", 1)], dims={"features": 96})


# --- logmel (no transfer) ----------------------------------------------------------------------

def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float, f_max: float,
                   norm: str = "area") -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape ``(n_fft // 2 + 1, n_mels)``, each with unit
    area (``norm="area"``) or unit sum of its weights (``norm="sum"``)."""
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
    if norm == "sum":
        return (bank / np.maximum(bank.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)
    return (bank * (2.0 / (upper - lower))).astype(np.float32)


class LogMel(nn.Module):
    """Log-mel spectrogram frames (25 ms Hann window, 10 ms hop, 64 bands 60 Hz-7.8 kHz) and their
    first 20 MFCCs (orthonormal DCT-II). No learned parameters."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160, n_mels: int = 64,
                 n_mfcc: int = 20) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("bank", torch.from_numpy(mel_filterbank(n_fft, sample_rate, n_mels, 60.0, 7800.0)),
                             persistent=False)
        k = np.arange(n_mels)
        dct = np.cos(np.pi / n_mels * (k[:, None] + 0.5) * np.arange(n_mfcc)[None]) * math.sqrt(2.0 / n_mels)
        dct[:, 0] /= math.sqrt(2.0)
        self.register_buffer("dct", torch.from_numpy(dct.astype(np.float32)), persistent=False)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        # center=False: a frame sees only the clip (or, past its end, batch padding, and such frames
        # are not counted), so a clip's features do not depend on what it was batched with
        logmel = self.logmel(waves.float())
        valid = (lengths.clamp(min=self.n_fft) - self.n_fft) // self.hop + 1
        return {"features": (logmel, valid), "mfcc": (logmel @ self.dct, valid)}

    def logmel(self, waves: torch.Tensor) -> torch.Tensor:
        spec = power_spectrum(waves, self.n_fft, self.hop, self.window, center=False)  # (B, freq, T)
        return torch.log(spec.transpose(1, 2) @ self.bank + 1e-6)

    def clip(self, wave: torch.Tensor) -> dict:
        """One clip's frames per tap, ``(T, D)`` (a clip shorter than a window zero-padded to one, as
        a batch pads it)."""
        logmel = self.logmel(pad_rows(wave.float(), self.n_fft)[None])[0]
        return {"features": logmel, "mfcc": logmel @ self.dct}


def build_logmel(input_spec: AudioSpec) -> AudioBackbone:
    return AudioBackbone(name="logmel", weights_id="", input_spec=input_spec, model=LogMel(),
                         taps=[TapPoint("mfcc", "mfcc", 1), TapPoint("features", "features", 1)],
                         dims={"mfcc": 20, "features": 64})


# --- sound_effects (aisfx CNN) --------------------------------------------------------------------

class _ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias) with batch norm and ReLU, then max pooling."""

    def __init__(self, cin: int, cout: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return nn.functional.max_pool2d(x, self.pool) if self.pool > 1 else x


class SoundEffectsCNN(nn.Module):
    """The aisfx sound-effects embedding network (a 9-layer DCASE-style CNN, 4.7 M parameters) with
    its input: 44.1 kHz peak-normalised audio, 96-band HTK mel power spectrogram (2048-sample
    window, 1024 hop), ``log10(1 + 10^4 x)`` scaled by the training maximum. Each conv block is a
    tap; its output averaged over frequency gives frames over time. Clips run one at a time, so a
    clip's features never depend on what it was batched with."""

    SAMPLE_RATE, N_FFT, HOP, SPEC_MAX = 44100, 2048, 1024, 9.457798957824707

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(self.N_FFT), persistent=False)
        bank = mel_filterbank(self.N_FFT, self.SAMPLE_RATE, 96, 0.0, self.SAMPLE_RATE / 2, norm="sum")
        self.register_buffer("bank", torch.from_numpy(bank), persistent=False)
        widths = [1, 64, 128, 256, 512]
        for i in range(4):
            self.add_module(f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1], 2 if i < 3 else 1))

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave / wave.abs().max().clamp(min=1e-12)
        spec = power_spectrum(wave[None], self.N_FFT, self.HOP, self.window, center=True)[0]  # (freq, T)
        mel = torch.log10(spec.T @ self.bank * 1e4 + 1.0) / self.SPEC_MAX  # (T, 96)
        return pad_rows(mel, 8)  # three 2x poolings need 8 frames

    def clip(self, wave: torch.Tensor) -> dict:
        """One clip's frames per tap, ``(T_i, C_i)``: each block's output averaged over frequency."""
        x = self.spectrogram(wave.float())[None, None]
        out = {}
        for i, name in enumerate(("block1", "block2", "block3", "features"), start=1):
            x = getattr(self, f"conv_block{i}")(x)
            out[name] = x.mean(dim=3)[0].T
        return out

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        outs: dict[str, list] = {f"block{i}": [] for i in (1, 2, 3)} | {"features": []}
        for wave, n in zip(waves, lengths):
            for name, frames in self.clip(wave[: int(n)]).items():
                outs[name].append(frames)
        result = {}
        for name, frames in outs.items():
            valid = torch.tensor([len(f) for f in frames], device=waves.device)
            result[name] = (nn.utils.rnn.pad_sequence(frames, batch_first=True), valid)
        return result


def _load_sound_effects_state(path: str) -> dict:
    """The checkpoint is a pickled ``(state_dict, datasets)`` tuple holding numpy scalars: read it
    with ``weights_only=True`` and only those numpy types allowed."""
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:
        from numpy.core.multiarray import scalar

    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType, np.dtypes.Float64DType,
               np.dtypes.Float32DType]
    with torch.serialization.safe_globals(allowed):
        state, _datasets = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "embedding_net."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def build_sound_effects(input_spec: AudioSpec, checkpoint: str | None) -> AudioBackbone:
    """The aisfx CNN filled from its ``checkpoint.pth`` (``None``: the architecture alone)."""
    model = SoundEffectsCNN()
    if checkpoint is not None:
        model.load_state_dict(_load_sound_effects_state(checkpoint), strict=True)
    taps = [TapPoint(f"block{i}", f"conv_block{i}", i) for i in (1, 2, 3)] + [TapPoint("features", "conv_block4", 4)]
    return AudioBackbone(name="sound_effects", weights_id="", input_spec=input_spec, model=model, taps=taps,
                         dims={"block1": 64, "block2": 128, "block3": 256, "features": 512})


# --- hf: speech encoders (wav2vec2, HuBERT, WavLM ...) ----------------------------------------------

class HFAudioEncoder(nn.Module):
    """A transformers speech encoder; every hidden state is a tap (``embeddings``, ``layer.i``,
    ``features``). Clips run one at a time (these encoders normalise over the whole input, so
    batch padding would change a clip's features), each normalised to zero mean and unit variance
    when the model's feature extractor asks for it."""

    def __init__(self, model: nn.Module, normalize: bool, min_samples: int = 400) -> None:
        super().__init__()
        self.model, self.normalize, self.min_samples = model, normalize, min_samples

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> dict:
        per_tap: dict[str, list[torch.Tensor]] = {}
        for wave, n in zip(waves, lengths):
            for name, frames in self.clip(wave[: int(n)]).items():
                per_tap.setdefault(name, []).append(frames)
        valid = torch.tensor([len(f) for f in next(iter(per_tap.values()))], device=waves.device)
        return {name: (nn.utils.rnn.pad_sequence(frames, batch_first=True), valid) for name, frames in per_tap.items()}

    def clip(self, wave: torch.Tensor) -> dict:
        """One clip's hidden states, ``(T, D)`` each: ``embeddings``, ``layer.i``, ``features``."""
        x = wave.float()
        if self.normalize:
            x = (x - x.mean()) / (x.var(unbiased=False) + 1e-7).sqrt()
        hidden = self.model(pad_rows(x, self.min_samples)[None], output_hidden_states=True).hidden_states
        names = ["embeddings", *[f"layer.{i}" for i in range(1, len(hidden) - 1)], "features"]
        return {name: h[0] for name, h in zip(names, hidden)}


def build_hf_audio_backbone(name: str, model_dir: str, pretrained: bool) -> AudioBackbone:
    """Load a speech encoder (and whether its inputs are normalised) from a local or hub directory."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    try:
        config = AutoConfig.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir) if pretrained else AutoModel.from_config(config)
        try:
            normalize = bool(getattr(AutoFeatureExtractor.from_pretrained(model_dir), "do_normalize", True))
        except OSError:
            normalize = True
    except Exception as exc:  # noqa: BLE001  (transformers and torch.load raise many types; all mean "cannot load")
        raise WeightsUnavailableError(f"cannot load audio encoder {name!r}: {why_unloadable(exc)}; offline, pass a "
                                      f"local model directory as hf:/path/to/model") from None
    n = config.num_hidden_layers
    dims = {t.name: config.hidden_size for t in text_taps(n)}
    return AudioBackbone(name=name, weights_id="", input_spec=AudioSpec(16000, 400),
                         model=HFAudioEncoder(model.eval(), normalize), taps=text_taps(n), dims=dims,
                         weights_target=model)  # a weights file holds the encoder's state, not the wrapper's
