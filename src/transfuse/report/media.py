"""Items as the report shows them, embedded in the page: image thumbnails (JPEG), text excerpts,
and short audio players (8 kHz, 16-bit WAV). An item that cannot be read shows its name."""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
THUMBNAIL = 112  # pixels on the longer side
TEXT_CHARS = 280
AUDIO_RATE, AUDIO_SECONDS = 8000, 2.0


def show(item: str, modality: str) -> str:
    """HTML for one item: ``<img>``, ``<audio>`` or an excerpt of the text."""
    try:
        if modality == "image":
            return f'<img class="thumb" alt="{html.escape(Path(item).name)}" src="{thumbnail(item)}">'
        if modality == "audio":
            return f'<audio controls preload="none" src="{clip(item)}"></audio>'
    except Exception as exc:  # noqa: BLE001  (a moved or corrupt file: the report still shows the rest)
        log.debug("cannot embed %s: %s", item, exc)
        return f'<span class="missing">{html.escape(Path(item).name)} (unreadable)</span>'
    text = item if len(item) <= TEXT_CHARS else item[:TEXT_CHARS] + "…"
    return f'<span class="text">{html.escape(text)}</span>'


def caption(item: str, modality: str) -> str:
    return "" if modality == "text" else html.escape(Path(item).name)


def thumbnail(path: str) -> str:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = THUMBNAIL / max(img.size)  # small images (28 px digits) are enlarged, sharp-edged
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.NEAREST if scale >= 2 else Image.LANCZOS)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def clip(path: str) -> str:
    """The first seconds of a clip, mono at 8 kHz, as a WAV data URI."""
    import wave

    from transfuse.data.audio import decode_audio

    samples = decode_audio(path, AUDIO_RATE)[: int(AUDIO_RATE * AUDIO_SECONDS)]
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes(pcm)
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
