"""An exported model run by ONNX Runtime alone (no torch): the file's metadata says the classes and
the preprocessing; images are decoded, resized and cropped with PIL as transfuse does, texts are
tokenised with the tokenizer beside the graph (``model.tokenizer.json`` for ``model.onnx``; the
``tokenizers`` package) into one window each, audio clips are decoded to mono at the graph's sample
rate (``soundfile``, ``scipy``) and run one at a time, and the graph gives the probabilities (or scores). ``transfuse predict model.onnx FILES`` uses it."""

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
        self.modality = modality_of(self.meta)
        self.per_run = 1 if self.modality in ONE_PER_RUN else BATCH
        self.tokenizer = None
        if self.modality == "text":
            from tokenizers import Tokenizer

            path = self.path.with_name(f"{self.path.stem}.{self.meta['tokenizer']}")
            if not path.is_file():
                raise DataError(f"{self.path} reads texts with the tokenizer written beside it, {path}, which is "
                                f"missing; export the model again or copy that file next to the graph")
            self.tokenizer = Tokenizer.from_file(str(path))
            self.tokenizer.no_padding()  # the file may carry the settings of its last use; windows are cut here
            self.tokenizer.no_truncation()

    def pixels(self, item) -> dict[str, np.ndarray]:
        """One image (a path or a PIL image) as each graph input takes it: ``(3, S, S)`` float32 in
        [0, 1] after that input's resize and centre crop."""
        from transfuse.data.images import decode_image
        from transfuse.engines.onnx_images import resize_and_crop

        img = item.convert("RGB") if hasattr(item, "convert") else decode_image(str(item))
        out = {}
        for name, prep in self.meta["inputs"].items():
            cropped = resize_and_crop(img, int(prep["image_size"]), float(prep["crop_pct"]), str(prep["interpolation"]))
            out[name] = np.asarray(cropped, np.float32).transpose(2, 0, 1) / np.float32(255)
        return out

    def waveform(self, item) -> np.ndarray:
        """One clip (a path) as the graph takes it: mono float32 at its sample rate."""
        from transfuse.data.audio import decode_audio

        return decode_audio(str(item), int(self.meta["sample_rate"]))

    def frames(self, item) -> np.ndarray:
        """One sequence (a ``.npy`` path) as the graph takes it: its frames, float32 ``(T, W)``."""
        from transfuse.data.sequences import read_sequence

        frames = read_sequence(str(item)).astype(np.float32)
        if frames.ndim != 2 or frames.shape[1] != int(self.meta["width"]):
            raise DataError(f"{item}: expected frames of {self.meta['width']} values, got shape {frames.shape}")
        return frames

    def prepare(self, item):
        """An item as :meth:`feeds` takes it: a text as it is, an image's pixels, a clip's waveform,
        a sequence's frames."""
        if self.modality == "text":
            return str(item)
        return {"audio": self.waveform, "sequence": self.frames}.get(self.modality, self.pixels)(item)

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Texts as the graph takes them: each one window (its tokens without specials, cut to fit,
        the special ids around), right-padded; ``input_ids`` and ``attention_mask``."""
        before, after = self.meta["specials"]
        room = int(self.meta["max_tokens"]) - len(before) - len(after)
        rows = [before + e.ids[:room] + after for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), int(self.meta["pad_id"]), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask}

    def feeds(self, batch: list) -> dict[str, np.ndarray]:
        """The graph's inputs for a batch of prepared items (pixels dicts, texts, or one waveform)."""
        if self.modality in ONE_PER_RUN:
            (item,) = batch
            return {"waveform" if self.modality == "audio" else "frames": item[None]}
        return self.tokens(batch) if self.modality == "text" else {k: np.stack([b[k] for b in batch]) for k in batch[0]}

    def scores(self, items: list) -> tuple[np.ndarray, np.ndarray]:
        """``(readable mask, probabilities or scores of the readable items)``; images by path or as
        PIL images, texts as strings, clips by path. Items are decoded in the calling thread: a
        thread pool measured no faster on 2 cores (ONNX Runtime already uses them) and slower at
        batch 1."""
        ok = np.zeros(len(items), bool)
        rows = []
        for start in range(0, len(items), self.per_run):
            prepared = [self._prepared(item) for item in items[start:start + self.per_run]]
            good = [i for i, p in enumerate(prepared, start) if p is not None]
            if good:
                rows.append(self.run([p for p in prepared if p is not None], [self.meta["output"]])[0])
                ok[good] = True
        width = len(self.classes_)
        return ok, np.concatenate(rows) if rows else np.zeros((0, width), np.float32)

    def run(self, prepared: list, outputs: list[str]) -> list[np.ndarray]:
        """The graph's ``outputs`` for prepared items (:meth:`prepare`), run :attr:`per_run` at a time."""
        runs = [self.session.run(outputs, self.feeds(prepared[start:start + self.per_run]))
                for start in range(0, len(prepared), self.per_run)]
        return [np.concatenate(rows) for rows in zip(*runs)]

    def _prepared(self, item):
        """:meth:`prepare`, or None for an item that cannot be read (logged)."""
        try:
            return self.prepare(item)
        except (CorruptInputError, DataError, OSError) as exc:
            log.debug("%s", exc)
            return None

    def predict_proba(self, items: list[str]) -> np.ndarray:
        ok, out = self.scores(items)
        if not ok.all():
            raise CorruptInputError.unreadable([p for p, good in zip(items, ok) if not good], len(items), cached=False)
        return out

    def predict(self, items: list[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(items).argmax(1)]


ONE_PER_RUN = ("audio", "sequence")  # all of an item's frames are pooled: the graph reads one item per run


def modality_of(meta: dict) -> str:
    """What an exported graph reads, from the inputs its metadata describes."""
    return "text" if "tokenizer" in meta else "audio" if "sample_rate" in meta else \
        "sequence" if "width" in meta else "image"


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value
