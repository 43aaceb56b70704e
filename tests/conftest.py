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


def cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the real ``transfuse`` console script in a subprocess."""
    import subprocess

    exe = Path(sys.executable).with_name("transfuse")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


def fashion_available() -> bool:
    return (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file()
