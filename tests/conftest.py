"""Shared fixtures. The whole test run is offline and uses a private feature cache."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFUSE_CACHE", tempfile.mkdtemp(prefix="transfuse-test-cache-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "fashion"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A copy of 3 classes x 8 real Fashion-MNIST PNGs from the bundled examples."""
    root = tmp_path / "data"
    for cls in ("bag", "sandal", "trouser"):
        (root / cls).mkdir(parents=True)
        for src in sorted((EXAMPLES / cls).glob("*.png"))[:8]:
            shutil.copy(src, root / cls / src.name)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


_SERVER = None


@pytest.fixture(scope="session", autouse=True)
def _fork_server():
    """The CLI fork server, started before any test can change this process's environment (the
    libraries it imports read some of it once: thread counts, devices), and stopped at the end."""
    global _SERVER
    if os.environ.get("TRANSFUSE_TEST_FORKSERVER", "1") != "0":
        from forkserver import ForkServer

        _SERVER = ForkServer()
    yield
    if _SERVER is not None:
        _SERVER.close()


def cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the real ``transfuse`` console script in a process of its own: forked from a server that
    has the heavy libraries imported already (tests/forkserver.py), or with
    ``TRANSFUSE_TEST_FORKSERVER=0`` as a plain subprocess."""
    import subprocess

    exe = str(Path(sys.executable).with_name("transfuse"))
    environment = {**os.environ, **(env or {})}
    if _SERVER is not None:
        return _SERVER.run(list(args), exe, cwd, environment, timeout=600)
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=600)


def fashion_available() -> bool:
    return (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file()


def drums_available() -> bool:
    from transfuse.data.packaged import drums_root
    from transfuse.errors import DataError

    try:
        drums_root()
        return True
    except DataError:
        return False


needs_drums = pytest.mark.skipif(not drums_available(), reason="run ./scripts/install-data.sh audio")


def tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> Path:
    """A sine tone written as an audio file (stereo by default)."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


@pytest.fixture
def drum_folder(tmp_path: Path) -> Path:
    """Real one-shot hits: 8 kicks, 8 snares, 8 hi-hats copied from the Hydrogen kits."""
    from transfuse.data.packaged import drum_hits

    hits = drum_hits()
    root = tmp_path / "drums"
    for label in ("kick", "snare", "hihat"):
        (root / label).mkdir(parents=True)
        picks = [p for p, lab in zip(hits["path"], hits["label"]) if lab == label][:8]
        for i, p in enumerate(picks):
            shutil.copy(p, root / label / f"{i:02d}{Path(p).suffix}")
    return root


@pytest.fixture
def tiny_wav2vec2(tmp_path: Path) -> Path:
    """A tiny randomly initialised wav2vec2 saved locally (stands in for a hub download)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2)
    model_dir = tmp_path / "tiny-w2v"
    Wav2Vec2Model(config).save_pretrained(model_dir)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def reviews():
    """60 real clothing reviews of three departments (and 20 more to predict)."""
    from transfuse.data.packaged import clothing_reviews
    from transfuse.data.source import Source

    data = clothing_reviews()
    keep = [i for i, d in enumerate(data["department"]) if d in ("Tops", "Dresses", "Bottoms")][:80]
    texts, labels = [data["text"][i] for i in keep], [data["department"][i] for i in keep]
    return Source(items=texts[:60], labels=labels[:60], name="reviews", kind="text"), texts[60:]
