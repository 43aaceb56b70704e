"""A transfuse plugin in one file: a backbone, a selection step and a head (see docs/extending.md).

- ``edges``: a backbone of fixed filters (grey level, then Sobel x, Sobel y and Laplacian, rectified),
  no training at all: a hand-made baseline that plugs into every command like a pretrained network;
- ``randproj``: a seeded Gaussian random projection to N columns (``--select randproj:64``);
- ``centroid``: the nearest class mean on standardised features (``--head centroid``).

Nothing in transfuse names this module. An installed distribution points its entry points at it::

    [project.entry-points."transfuse.backbones"]
    example = "transfuse_example_plugin"
    [project.entry-points."transfuse.parts"]
    example = "transfuse_example_plugin"

and transfuse reads ``BACKBONES`` and ``PARTS`` from it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from transfuse.backbones import Backbone, BackboneSpec, InputSpec, TapPoint, TapSpec, WeightsSource
from transfuse.errors import DataError
from transfuse.heads import Head
from transfuse.steps import Step

# -- a backbone --------------------------------------------------------------------------------------
SIZE = 64
INPUT = InputSpec(size=SIZE, crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear")


class EdgeNet(nn.Module):
    """Grey level, then three fixed 3x3 filters (rectified); ``features`` adds average and max pooling
    over 4x4 cells. Its 27 filter weights are written here, not learned."""

    def __init__(self) -> None:
        super().__init__()
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        laplace = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        conv = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        conv.weight.data = torch.stack([sobel, sobel.T, laplace])[:, None]
        conv.weight.requires_grad_(False)
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False)
        self.edges = nn.Sequential(conv, Abs())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        edges = self.edges((x * self.grey).sum(1, keepdim=True))
        return torch.cat([nn.functional.avg_pool2d(edges, 4), nn.functional.max_pool2d(edges, 4)], dim=1)


class Abs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


def _build(pretrained: bool) -> Backbone:
    """The same network either way: there are no weights to load or to randomise."""
    return Backbone(name="edges", weights_id="", input_spec=INPUT, model=EdgeNet(),
                    taps=[TapPoint("edges", "edges", 0), TapPoint("features", "features", 1)])


BACKBONES = (BackboneSpec(
    name="edges", build=_build, input_spec=INPUT,
    taps=(TapSpec("edges", 0, (3, SIZE, SIZE)), TapSpec("features", 1, (6, SIZE // 4, SIZE // 4))),
    weights=WeightsSource(id="edges:v1", origin="fixed filters written in transfuse_example_plugin.py"),
    family="hand-made", description="Sobel and Laplacian edge maps from fixed filters (an example plugin)",
    license="Apache-2.0", params=27),)


# -- a selection step ---------------------------------------------------------------------------------
class RandomProjection(Step):
    """A seeded Gaussian random projection to ``n_components`` columns (distances kept on average)."""

    kind = "randproj"
    role = "selection"

    def __init__(self, n_components: int = 64, random_state: int = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    @classmethod
    def from_arg(cls, arg: str) -> RandomProjection:
        """``randproj`` or ``randproj:N``."""
        n = int(arg or 64)
        if n < 1:
            raise DataError(f"bad selection 'randproj:{arg}': randproj keeps at least 1 column")
        return cls(n)

    def fit(self, X, y=None) -> RandomProjection:
        X = self._check(X, reset=True)
        rng = np.random.default_rng(self.random_state)
        projection = rng.normal(size=(X.shape[1], int(self.n_components))) / np.sqrt(int(self.n_components))
        self._finish({"projection": projection}, {"n_features_in": X.shape[1], "n_features_out": int(self.n_components)})
        return self

    def transform(self, X) -> np.ndarray:
        X = self._check(X, reset=False)
        return (X @ self.state_["projection"]).astype(np.float32)


# -- a head -------------------------------------------------------------------------------------------
class CentroidHead(Head):
    """The nearest class mean; probabilities are a softmax of minus the squared distances."""

    kind = "centroid"

    def __init__(self, temperature: float = 1.0, standardize: bool = True) -> None:
        self.temperature = temperature
        self.standardize = standardize

    def _fit_state(self, Z, y_idx):
        return {"centroids": np.stack([np.asarray(Z[y_idx == c]).mean(axis=0) for c in range(len(self.classes_))])}

    def _outputs(self) -> int:
        return len(self.state_["centroids"])  # checked against the class list when a model is loaded

    def predict_proba(self, X) -> np.ndarray:
        Z = self._standardise(X)
        distances = ((np.asarray(Z)[:, None, :] - self.state_["centroids"][None]) ** 2).sum(-1)
        return softmax(-distances / float(self.temperature), axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


PARTS = (RandomProjection, CentroidHead)
