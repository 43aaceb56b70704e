"""Finding and decoding audio files: mono float32 waveforms at the sample rate a backbone needs."""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path

import numpy as np

from transfuse.errors import CorruptInputError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})


def is_audio_file(path: str | Path) -> bool:
    """True when the file name has an audio extension (content is checked at decode time)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS and not Path(path).name.startswith(".")


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read an audio file as a mono float32 waveform in [-1, 1] at ``sample_rate``.

    Channels are averaged (down-mix) and other rates resampled with a polyphase filter.
    Unreadable, corrupt or empty files raise :class:`CorruptInputError`.

    >>> decode_audio("kick.wav", 16000).shape  # doctest: +SKIP
    (7040,)
    """
    import soundfile as sf

    if not Path(path).is_file():
        raise CorruptInputError(f"audio file not found: {path}", [str(path)])
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise CorruptInputError(f"cannot decode audio {path}: {exc}", [str(path)]) from None
    if data.shape[0] == 0:
        raise CorruptInputError(f"audio file {path} has no samples", [str(path)])
    wave = data.mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = gcd(int(rate), int(sample_rate))
        wave = resample_poly(wave, sample_rate // g, int(rate) // g).astype(np.float32)
    if not np.isfinite(wave).all():
        raise CorruptInputError(f"audio file {path} contains NaN or infinite samples", [str(path)])
    return np.ascontiguousarray(wave, dtype=np.float32)


def durations(paths: list[str]) -> list[float]:
    """Seconds of each file from its header (no decoding); 0 for files that cannot be read (they are
    decoded, and reported, later)."""
    import soundfile as sf

    out = []
    for p in paths:
        try:
            info = sf.info(str(p))
            out.append(info.frames / max(info.samplerate, 1))
        except Exception:  # noqa: BLE001  (any unreadable header: the decoder reports it properly)
            out.append(0.0)
    return out
