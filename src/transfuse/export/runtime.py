"""An exported model run by ONNX Runtime alone (no torch): the file's metadata says the classes and
the preprocessing, images are decoded, resized and cropped with PIL as transfuse does, and the graph
gives the probabilities (or scores). ``transfuse predict model.onnx FILES`` uses it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from transfuse.errors import CorruptInputError, DataError

log = logging.getLogger(__name__)
BATCH = 32


class ExportedModel:
    """``predict``/``predict_proba``/``scores`` over image files, like a loaded model directory."""

    def __init__(self, path: str | Path) -> None:
        from transfuse.onnxrt import onnx_session

        self.path = Path(path)
        try:
            self.session = onnx_session(str(self.path))
        except Exception as exc:  # noqa: BLE001  (a truncated or foreign file: say which)
            raise DataError(f"{self.path} is not a readable ONNX file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "transfuse_export" not in props:
            raise DataError(f"{self.path} was not written by `transfuse export` (no transfuse metadata); run it with "
                            f"onnxruntime directly")
        self.meta = {k: _json_or_text(v) for k, v in props.items()}
        self.classes_ = np.asarray(self.meta["classes"])
        self.has_proba = self.meta.get("output") == "probabilities"
        self.modality = "image"

    def pixels(self, path: str) -> np.ndarray:
        """One image as the graph takes it: ``(3, S, S)`` float32 in [0, 1]."""
        from transfuse.data.images import decode_image
        from transfuse.engines.onnx_images import resize_and_crop

        size = int(self.meta["image_size"])
        img = resize_and_crop(decode_image(path), size, float(self.meta["crop_pct"]), str(self.meta["interpolation"]))
        return np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255)

    def scores(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(readable mask, probabilities or scores of the readable items)``."""
        ok = np.zeros(len(items), bool)
        rows = []
        for start in range(0, len(items), BATCH):
            batch, good = [], []
            for i, path in enumerate(items[start:start + BATCH], start):
                try:
                    batch.append(self.pixels(str(path)))
                    good.append(i)
                except (CorruptInputError, DataError, OSError) as exc:
                    log.debug("%s", exc)
            if batch:
                rows.append(self.session.run([self.meta["output"]], {"pixels": np.stack(batch)})[0])
                ok[good] = True
        width = len(self.classes_)
        return ok, np.concatenate(rows) if rows else np.zeros((0, width), np.float32)

    def predict_proba(self, items: list[str]) -> np.ndarray:
        ok, out = self.scores(items)
        if not ok.all():
            raise CorruptInputError.unreadable([p for p, good in zip(items, ok) if not good], len(items), cached=False)
        return out

    def predict(self, items: list[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(items).argmax(1)]


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value
