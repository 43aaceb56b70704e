"""The image path of the ONNX Runtime engine without torch: decode and resize with PIL, normalise
and pool with numpy, run the exported tap graph.

It stands in for the built backbone whenever images run on an exported graph (the same ``batches`` /
``embed`` calls), so every row under an ONNX cache key is pooled the same way, and a model whose
features come from an exported graph predicts a new image without importing torch, timm or
torchvision (about 3 s of a cold start on 2 cores); many items on a machine with decoding workers
still decode in torch's DataLoader. The resize and crop are timm's
eval transform written in PIL, pixel for pixel (tests compare the two); pooling is the same
arithmetic as :func:`transfuse.taps.pool` for convolutional maps and vectors.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from transfuse.data.images import decode_image
from transfuse.errors import CorruptInputError, DataError
from transfuse.taps import GEM_P

log = logging.getLogger(__name__)
POOLINGS = ("avg", "max", "gem", "avgmax")
# families whose built backbone is the plain Backbone: timm's eval preprocessing, NCHW images in, no
# tokens (a family with its own batches or inputs, such as Keras models or a plugin's, is not served)
BASE_FAMILIES = frozenset({"efficientnet-lite", "vgg", "small-cnn", "timm", "torchvision", "test"})
_FILTERS = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}  # PIL's numbers


def serves(spec, taps: list[str], pooling: str) -> bool:
    """Whether this path computes what the backbone would: a torch image network whose requested
    taps are maps ``(C, H, W)`` or vectors, pooled by a pooling that needs no token layout."""
    shapes = {t.name: t.shape for t in spec.taps}
    family = spec.family.removeprefix("own (").removesuffix(")")  # a source trained here: its architecture's
    return (spec.modality == "image" and spec.network == "torch" and family in BASE_FAMILIES and pooling in POOLINGS
            and all(len(shapes.get(tap, ())) in (1, 3) for tap in taps))


def resize_and_crop(img, size: int, crop_pct: float, interpolation: str):
    """timm's eval geometry in PIL: the short side resized to ``floor(size / crop_pct)`` (aspect kept),
    then the centre ``size`` x ``size`` crop (torchvision's rounding)."""
    scale = math.floor(size / crop_pct)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(scale * long / short)
    new_w, new_h = (scale, new_long) if w <= h else (new_long, scale)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _FILTERS[interpolation])
    if new_w < size or new_h < size:
        raise DataError(f"image of {w}x{h} is too small to crop {size}px after resizing")  # not with timm's sizes
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def pool_array(x: np.ndarray, pooling: str) -> np.ndarray:
    """``(N, C, H, W)`` maps -> ``(N, C)`` (``avgmax``: ``(N, 2C)``); ``(N, D)`` passes through."""
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        return x
    if pooling == "avgmax":
        return np.concatenate([x.mean(axis=(2, 3)), x.max(axis=(2, 3))], axis=1)
    if pooling == "max":
        return x.max(axis=(2, 3))
    if pooling == "gem":
        return np.power(np.power(np.clip(x, 1e-6, None), GEM_P).mean(axis=(2, 3)), 1.0 / GEM_P)
    return x.mean(axis=(2, 3))


class OnnxImages:
    """What extraction needs from a backbone, for images on an exported graph: ``batches`` of
    decoded, resized uint8 pixels, and ``embed`` (normalise, run, pool)."""

    modality = "image"

    def __init__(self, spec) -> None:
        self.name, self.input_spec, self.tap_names = spec.name, spec.input_spec, spec.tap_names

    def default_batch_size(self, device: str) -> int:
        return 4

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        """``(pixels (B, H, W, 3) uint8, positions, ok)`` per batch: decoded inline, or in DataLoader
        workers where extraction would use them (the same pixels: timm's geometry either way)."""
        from transfuse.config import default_workers

        workers = default_workers(len(items), device) if num_workers is None else num_workers
        if workers > 0:
            from torch.utils.data import DataLoader

            from transfuse.data.datasets import ImageFiles

            spec = self.input_spec
            for pixels, idx, ok in DataLoader(ImageFiles(items, spec.geometry(), spec.size, pixels=True),
                                              batch_size=batch_size, num_workers=workers, shuffle=False):
                yield pixels.numpy(), idx.numpy(), ok.numpy()
            return
        yield from self._inline(items, batch_size)

    def _inline(self, items: list[str], batch_size: int):
        spec, size = self.input_spec, self.input_spec.size
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            pixels = np.zeros((len(chunk), size, size, 3), np.uint8)
            ok = np.zeros(len(chunk), bool)
            for j, path in enumerate(chunk):
                try:
                    img = resize_and_crop(decode_image(path), size, spec.crop_pct, spec.interpolation)
                    pixels[j], ok[j] = np.asarray(img, dtype=np.uint8), True
                except (CorruptInputError, DataError) as exc:
                    log.debug("%s", exc)
                except Exception as exc:  # noqa: BLE001  (odd content is a bad input, like in the loader)
                    log.debug("cannot preprocess %s: %s", path, exc)
            yield pixels, np.arange(start, start + len(chunk)), ok

    def network_inputs(self, pixels: np.ndarray) -> tuple[np.ndarray]:
        """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)``: /255, minus mean, over std."""
        x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.input_spec.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.input_spec.std, np.float32).reshape(1, 3, 1, 1)
        return (np.ascontiguousarray((x - mean) / std),)

    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str,
              runner=None) -> dict[str, np.ndarray]:
        if runner is None:
            raise DataError(f"{self.name}: the ONNX image path needs the exported graph")
        raw = runner(self.network_inputs(inputs[good]))
        return {tap: pool_array(np.asarray(raw[tap]), pooling) for tap in taps}
