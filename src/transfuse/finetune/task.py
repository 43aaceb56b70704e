"""What fine-tuning needs to know about one modality: the network with a new output layer, its
parameter groups (input to output), and how items become training and prediction batches."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from transfuse.backbones.inputs import InputSpec
from transfuse.backbones.nets.base import Backbone, TapPoint
from transfuse.data.datasets import ImageFiles
from transfuse.data.images import decode_image
from transfuse.errors import CorruptInputError, DataError
from transfuse.finetune.strategy import parameter_groups

log = logging.getLogger(__name__)


def transforms(spec: InputSpec, image_size: int, augment: bool):
    """(train, eval) transforms from timm's factory at ``image_size`` with the backbone's mean/std."""
    from timm.data import create_transform

    common = dict(input_size=(3, image_size, image_size), mean=spec.mean, std=spec.std, interpolation=spec.interpolation)
    train = create_transform(is_training=augment, hflip=0.5, scale=(0.6, 1.0), **common) if augment else \
        create_transform(is_training=False, crop_pct=1.0, **common)
    return train, create_transform(is_training=False, crop_pct=1.0, **common)


def run_seed(seed: int, epoch: int, item: int = -1) -> int:
    """The seed of one epoch (or of one item in it) of a run: a function of these numbers alone, so a
    resumed run draws exactly what an uninterrupted one draws."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + item + 1) % (2**63)


@contextlib.contextmanager
def seeded(seed: int):
    """Every random source a transform may use (torch, random, numpy) seeded for the block, and put
    back after it."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class EpochShuffle(Sampler):
    """Shuffles every epoch from ``(seed, epoch)`` alone (Lightning calls ``set_epoch`` as an epoch
    starts) and yields ``(index, epoch)``, so each item also seeds its augmentation from the epoch:
    a run resumed from a checkpoint sees the data an uninterrupted run sees, whatever the workers."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self._told, self._used = False, False

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._told = epoch, True

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self._used and not self._told:  # wrapped (DDP's sampler wrapper does not pass set_epoch on): count
            self.epoch += 1
        self._used, self._told = True, False
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(run_seed(self.seed, self.epoch)))
        return iter([(int(i), self.epoch) for i in order])


class _Labelled(Dataset):
    def __init__(self, items: list[str], labels: np.ndarray, prepare, seed: int = 0) -> None:
        self.items, self.labels, self.prepare, self.seed = items, labels, prepare, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, None)
        if epoch is None:
            return self.prepare(self.items[i]), int(self.labels[i])
        with seeded(run_seed(self.seed, epoch, i)):
            return self.prepare(self.items[i]), int(self.labels[i])


def labelled_loader(items: list[str], labels: np.ndarray, prepare, train: bool, batch_size: int, seed: int,
                    num_workers: int = 0, collate_fn=None) -> DataLoader:
    """Training batches in the :class:`EpochShuffle` order with seeded augmentation, or evaluation
    batches in order."""
    data = _Labelled(items, labels, prepare, seed)
    return DataLoader(data, batch_size=batch_size, sampler=EpochShuffle(len(items), seed) if train else None,
                      num_workers=num_workers, collate_fn=collate_fn)


class _TimmStyleTask:
    """A backbone whose model is timm-style: its own classifier is replaced, its taps are the groups."""

    backbone: Backbone

    def network(self, n_classes: int) -> nn.Module:
        self.backbone.model.reset_classifier(n_classes)
        return self.backbone.model

    def groups(self) -> list[tuple[str, list[str]]]:
        return parameter_groups(self.backbone)


class ImageTask(_TimmStyleTask):
    """Images: timm transforms (augmented for training) at ``image_size``; the timm model's own
    classifier is replaced."""

    modality = "image"

    def __init__(self, backbone: Backbone, image_size: int, augment: bool = True) -> None:
        self.backbone, self.image_size = backbone, image_size
        self.train_tf, self.eval_tf = transforms(backbone.input_spec, image_size, augment)

    def unreadable(self, items: list[str]) -> list[str]:
        """Files that cannot be decoded (checked before any training starts)."""
        bad = []
        for p in items:
            try:
                decode_image(p)
            except CorruptInputError:
                bad.append(p)
        return bad

    def loader(self, items: list[str], labels: np.ndarray, train: bool, batch_size: int, seed: int,
               num_workers: int = 0) -> DataLoader:
        tf = self.train_tf if train else self.eval_tf
        return labelled_loader(items, labels, lambda p: tf(decode_image(p)), train, batch_size, seed, num_workers)

    def predict_batches(self, items: list[str], batch_size: int):
        """``(inputs, positions, ok)`` per batch; undecodable files come back with ``ok`` False."""
        yield from DataLoader(ImageFiles(list(items), self.eval_tf, self.image_size), batch_size=batch_size)


class TextClassifier(nn.Module):
    """A transformer encoder, the mean of its last layer over real tokens, and a linear output layer
    (the same pooling as the feature path, so a probe and fine-tuning start from the same vector)."""

    def __init__(self, body: nn.Module, n_classes: int) -> None:
        super().__init__()
        if getattr(body, "pooler", None) is not None:
            body.pooler = None  # BERT-style poolers are not used here: no unused parameters under DDP
        self.body = body
        self.classifier = nn.Linear(body.config.hidden_size, n_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = self.body(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        m = mask[..., None].to(hidden.dtype)
        return self.classifier((hidden * m).sum(1) / m.sum(1).clamp(min=1))


class TextTask:
    """Texts: tokenised per batch, truncated to the encoder's window (fine-tuning reads the first
    window of a long text; the feature path can also chunk)."""

    modality = "text"

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.net: TextClassifier | None = None

    def network(self, n_classes: int) -> nn.Module:
        self.net = TextClassifier(self.backbone.model, n_classes)
        return self.net

    def groups(self) -> list[tuple[str, list[str]]]:
        """The encoder's taps (embeddings, each layer) as groups, under the wrapper's ``body.``."""
        taps = [TapPoint(t.name, f"body.{t.module}", t.depth) for t in self.backbone.taps]
        return parameter_groups(dataclasses.replace(self.backbone, model=self.net, taps=taps))

    def unreadable(self, items: list[str]) -> list[str]:
        return []

    def _encode(self, texts: list[str]) -> dict:
        enc = self.backbone.tokenizer(list(texts), truncation=True, max_length=self.backbone.input_spec.max_tokens,
                                      padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def _collate(self, rows):
        texts, labels = zip(*rows)
        return self._encode(list(texts)), torch.tensor(labels)

    def loader(self, items: list[str], labels: np.ndarray, train: bool, batch_size: int, seed: int,
               num_workers: int = 0) -> DataLoader:
        return labelled_loader(items, labels, lambda t: t, train, batch_size, seed, num_workers, self._collate)

    def predict_batches(self, items: list[str], batch_size: int):
        """Texts of similar length batched together (by character count), so little goes to padding."""
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        for start in range(0, len(order), batch_size):
            pos = order[start:start + batch_size]
            yield self._encode([items[i] for i in pos]), torch.tensor(pos), torch.ones(len(pos), dtype=torch.bool)


class SequenceTask(_TimmStyleTask):
    """Frame sequences (``.npy`` items): zero-padded batches with their lengths; no augmentation."""

    modality = "sequence"

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone

    def unreadable(self, items: list[str]) -> list[str]:
        from transfuse.data.datasets import SequenceFiles

        files = SequenceFiles(items, self.backbone.input_spec.width)
        return [items[i] for i in range(len(items)) if not files[i][2]]

    @staticmethod
    def _collate(rows):
        from transfuse.data.datasets import pad_frames

        frames, labels = zip(*rows)
        (padded, lengths), _, _ = pad_frames([(f, i, True) for i, f in enumerate(frames)])
        return {"frames": padded, "lengths": lengths}, torch.tensor(labels)

    def loader(self, items: list[str], labels: np.ndarray, train: bool, batch_size: int, seed: int,
               num_workers: int = 0) -> DataLoader:
        from transfuse.data.sequences import read_sequence

        return labelled_loader(items, labels, lambda p: torch.from_numpy(read_sequence(p)), train, batch_size, seed,
                               num_workers, self._collate)

    def predict_batches(self, items: list[str], batch_size: int):
        yield from self.backbone.batches(list(items), batch_size, 0, "cpu")


def make_task(backbone: Backbone, image_size: int = 128, augment: bool = True) -> ImageTask | TextTask | SequenceTask:
    """The fine-tuning adapter of a backbone's modality (audio encoders here are frozen)."""
    if backbone.modality == "image":
        return ImageTask(backbone, image_size, augment)
    if backbone.modality == "sequence":
        return SequenceTask(backbone)
    if backbone.modality == "text" and getattr(backbone, "tokenizer", None) is not None:
        return TextTask(backbone)
    if backbone.modality == "text":
        raise DataError(f"{backbone.name} is a frozen encoder (not a torch network) and cannot be fine-tuned; "
                        f"use `transfuse fit`, or fine-tune minilm_l6")
    raise DataError(f"{backbone.name} cannot be fine-tuned: the built-in audio encoders are frozen "
                    f"(speech_embedding is an ONNX model, logmel has no weights); use `transfuse fit` "
                    f"(pretrained features + a trained head) for audio")
