"""Fusion of several feature blocks (layers, or layers of several backbones) into one representation.

- :class:`ConcatFusion`: standardise every column, then scale each block so that all blocks
  have the same total variance (the mean block width), so a 1280-wide block does not drown a
  40-wide one; concatenate. One block alone is just standardised.
- :class:`WeightedFusion` (linear): project each block to a common width, sum them with learned
  softmax block weights; trained with a linear classifier on top.
- :class:`GatedFusion` (non-linear): ReLU projection of each block, a per-item softmax gate over
  blocks; trained with a classifier on top, early stopping on a validation split.

All take ``blocks`` (the layout extraction recorded), ``use`` (the block names to fuse; None =
all) and ``select_blocks`` (keep at most that many of them, chosen by group lasso on the
training data). The learned fusions are trained
in torch (:mod:`transfuse.fusion_net`, imported by their ``fit``); ``transform`` runs from the saved
arrays in numpy, so a saved model predicts without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from sklearn.utils.multiclass import check_classification_targets

from transfuse.blocks import Blocks, layout
from transfuse.errors import DataError
from transfuse.parts import part_kinds
from transfuse.selection import group_lasso_blocks
from transfuse.steps import Step


@dataclass
class _Prepared:
    """What every fusion's ``fit`` starts from: standardised features and the blocks to fuse."""

    Z: np.ndarray
    pairs: list[tuple[str, slice]]
    mean: np.ndarray
    scale: np.ndarray
    y: np.ndarray | None
    report: dict

    def meta(self, n_out: int, **extra) -> dict:
        return {"n_features_in": int(self.mean.shape[0]), "n_features_out": int(n_out),
                "kept_blocks": {n: [s.start, s.stop] for n, s in self.pairs},
                **({"group_lasso": self.report} if self.report else {}), **extra}


class Fusion(Step):
    """Base of every fusion (a new one subclasses it): standardisation, block layout and optional
    group-lasso block choice; constructors take ``blocks``, ``use`` and ``select_blocks``."""

    role = "fusion"
    aliases: tuple[str, ...] = ()  # other names ``make_fusion`` accepts

    def _prepare(self, X, y=None) -> _Prepared:
        if y is None:
            X = self._check(X, reset=True)
        else:
            X, y = self._check(X, reset=True, y=y)
        pairs = layout(self.blocks, X.shape[1])
        if self.use:
            unknown = sorted(set(self.use) - {n for n, _ in pairs})
            if unknown:
                raise DataError(f"no block named {', '.join(unknown)}; the features have {', '.join(n for n, _ in pairs)}")
            pairs = [(n, s) for n, s in pairs if n in self.use]
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        Z = (X - mean) / scale
        report: dict = {}
        if self.select_blocks is not None and int(self.select_blocks) < len(pairs):
            if y is None:
                raise DataError("select_blocks (group lasso) needs labels: call fit(X, y)")
            check_classification_targets(y)
            _, y_idx = np.unique(y, return_inverse=True)
            report = group_lasso_blocks(Z, y_idx, pairs, int(self.select_blocks))
            pairs = [(n, s) for n, s in pairs if n in report["kept"]]
        return _Prepared(Z, pairs, mean, scale, y, report)

    def _kept(self) -> list[slice]:
        return [slice(a, b) for a, b in self.meta_["kept_blocks"].values()]

    def _standardised(self, X) -> np.ndarray:
        X = self._check(X, reset=False)
        return (X - self.state_["mean"]) / self.state_["scale"]


class ConcatFusion(Fusion):
    """Concatenate blocks after per-column standardisation and a per-block scale that gives every
    block the same total variance.

    >>> ConcatFusion(blocks={"blocks.4": [0, 112], "features": [112, 1392]}).fit_transform(X)  # doctest: +SKIP
    """

    kind = "concat"

    def __init__(self, blocks: Blocks | None = None, use: list[str] | None = None,
                 select_blocks: int | None = None) -> None:
        self.blocks = blocks
        self.use = use
        self.select_blocks = select_blocks

    def fit(self, X, y=None) -> ConcatFusion:
        prep = self._prepare(X, y)
        pairs = prep.pairs
        scale = prep.scale.copy()
        mean_width = np.mean([s.stop - s.start for _, s in pairs])
        for _, s in pairs:  # every block gets the same total variance: the mean block width
            scale[s] *= np.sqrt((s.stop - s.start) / mean_width)
        self._finish({"mean": prep.mean, "scale": scale}, prep.meta(sum(s.stop - s.start for _, s in pairs)))
        return self

    def transform(self, X) -> np.ndarray:
        Z = self._standardised(X)
        return np.concatenate([Z[:, s] for s in self._kept()], axis=1).astype(np.float32)


class _LearnedFusion(Fusion):
    gated = False
    project = True  # False: blocks are mixed as they are (all must have the same width)

    def __init__(self, blocks: Blocks | None = None, use: list[str] | None = None,
                 select_blocks: int | None = None, width: int = 256,
                 max_epochs: int = 300, lr: float = 3e-3, weight_decay: float = 1e-3, dropout: float = 0.2,
                 patience: int = 20, random_state: int = 0) -> None:
        self.blocks = blocks
        self.use = use
        self.select_blocks = select_blocks
        self.width = width
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.patience = patience
        self.random_state = random_state

    def fit(self, X, y) -> _LearnedFusion:
        if y is None:
            raise DataError(f"{type(self).__name__} is trained with labels: call fit(X, y)")
        prep = self._prepare(X, y)
        Z, pairs = prep.Z, prep.pairs
        check_classification_targets(prep.y)
        classes, y_idx = np.unique(prep.y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"{type(self).__name__} needs at least 2 classes, got 1 class")
        widths = [s.stop - s.start for _, s in pairs]
        if not self.project and len(set(widths)) > 1:
            raise DataError(f"{self.kind} fusion mixes layers of one width (a transformer's hidden layers); got "
                            f"widths {dict(zip([n for n, _ in pairs], widths))}: use weighted or concat")
        width = int(self.width) if self.project else widths[0]
        import torch

        from transfuse.fusion_net import FusionNet, train_fusion

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            net = FusionNet(widths, width, len(classes), self.gated, float(self.dropout), self.project)
            epochs = train_fusion(net, [Z[:, s] for _, s in pairs], y_idx, self)
        state = {"mean": prep.mean, "scale": prep.scale}
        for i, p in enumerate(net.proj if self.project else []):
            state[f"proj.{i}"] = p.weight.detach().numpy().T.astype(np.float64)
            state[f"bias.{i}"] = p.bias.detach().numpy().astype(np.float64)
        extra: dict = {"epochs": epochs}
        if self.gated:
            state["gate"] = net.gate.weight.detach().numpy().ravel().astype(np.float64)
            state["gate_bias"] = net.gate_bias.detach().numpy().astype(np.float64)
        else:
            w = softmax(net.alpha.detach().numpy().astype(np.float64))
            state["weights"] = w
            extra["block_weights"] = {n: float(v) for (n, _), v in zip(pairs, w)}
        self._finish(state, prep.meta(width, **extra))
        if self.gated:
            gates = self._gates(Z)
            self.meta_["mean_gates"] = {n: float(v) for n, v in zip(self.meta_["kept_blocks"], gates.mean(axis=0))}
        return self

    def _projections(self, Z: np.ndarray) -> np.ndarray:
        if not self.project:
            return np.stack([Z[:, s] for s in self._kept()], axis=1)
        H = np.stack([Z[:, s] @ self.state_[f"proj.{i}"] + self.state_[f"bias.{i}"]
                      for i, s in enumerate(self._kept())], axis=1)
        return np.maximum(H, 0.0) if self.gated else H

    def _gates(self, Z: np.ndarray) -> np.ndarray:
        return softmax(self._projections(Z) @ self.state_["gate"] + self.state_["gate_bias"], axis=1)

    def transform(self, X) -> np.ndarray:
        Z = self._standardised(X)
        H = self._projections(Z)
        g = self._gates(Z) if self.gated else np.broadcast_to(self.state_["weights"], H.shape[:2])
        return (g[:, :, None] * H).sum(axis=1).astype(np.float32)


class WeightedFusion(_LearnedFusion):
    """Linear fusion: per-block projections summed with learned softmax block weights."""

    kind = "weighted"


class ScalarMixFusion(_LearnedFusion):
    """A learned softmax-weighted sum of same-width layers as they are (no projection): the
    classic way to use every hidden layer of a transformer encoder."""

    kind = "scalar-mix"
    project = False


class GatedFusion(_LearnedFusion):
    """Non-linear fusion: ReLU projections and a per-item softmax gate over blocks."""

    kind = "gated"
    aliases = ("mlp",)
    gated = True


PARTS = (ConcatFusion, WeightedFusion, ScalarMixFusion, GatedFusion)


def make_fusion(kind: str, blocks: Blocks | None, use: list[str] | None = None,
                select_blocks: int | None = None, **params) -> Fusion:
    """A registered fusion by kind or alias: ``concat`` | ``weighted`` | ``scalar-mix`` | ``gated``
    (``mlp``), or one a plugin adds. Every fusion takes ``blocks``, ``use`` and ``select_blocks``.

    >>> make_fusion("weighted", {"blocks.4": [0, 112], "features": [112, 1392]}).kind
    'weighted'
    """
    fusions = part_kinds("fusion")
    by_name = {**{a: c for c in fusions.values() for a in getattr(c, "aliases", ())}, **fusions}
    if kind not in by_name:
        raise DataError(f"unknown fusion {kind!r}; choose one of {', '.join(sorted(by_name))}")
    return by_name[kind](blocks=blocks, use=use, select_blocks=select_blocks, **params)
