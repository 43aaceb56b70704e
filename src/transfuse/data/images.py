"""Finding and decoding image files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from transfuse.errors import CorruptInputError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension (content is checked at decode time)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")


def decode_image(path: str | Path) -> Image.Image:
    """Open an image file fully and return it as RGB.

    Raises :class:`CorruptInputError` for truncated, corrupt or non-image files.

    >>> decode_image("examples/fashion/bag/00000.png").mode  # doctest: +SKIP
    'RGB'
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise CorruptInputError(f"image not found: {path}", [str(path)]) from None
    except Image.DecompressionBombError as exc:  # a few bytes that would decode to gigabytes
        raise CorruptInputError(f"refusing to decode image {path}: {exc}", [str(path)]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptInputError(f"cannot decode image {path}: {exc}", [str(path)]) from None


def images_under(folder: str | Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> tuple[list[str], int]:
    """Sorted paths below ``folder`` (recursively) with one of ``extensions`` (images by default),
    and how many other files were passed over."""
    files = sorted(str(Path(root) / f) for root, _, names in os.walk(folder) for f in names)
    images = [f for f in files if Path(f).suffix.lower() in extensions and not Path(f).name.startswith(".")]
    return images, len(files) - len(images)


def find_images(inputs: list[str | Path], extensions: frozenset[str] = IMAGE_EXTENSIONS, what: str = "image") -> list[str]:
    """Expand files and folders (recursively) into a sorted list of image (or ``extensions``) paths.

    >>> find_images(["examples/fashion/bag"])[:1]  # doctest: +SKIP
    ['examples/fashion/bag/00000.png']
    """
    found: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images, ignored = images_under(p, extensions)
            if ignored:
                log.info("ignored %d non-%s files under %s", ignored, what, p)
            found.extend(images)
        elif p.is_file():
            found.append(str(p))
        else:
            raise DataError(f"no such file or folder: {p}")
    if not found:
        raise DataError(f"no {what} files found in {', '.join(map(str, inputs))} "
                        f"(looked for {', '.join(sorted(extensions))})")
    return found
