"""What a job is asked to do: the split, the featurizer, where results go, one ``fit``
request and its result."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.pipeline import Pipeline

from transfuse.backbones import default_backbone
from transfuse.data.source import Source
from transfuse.data.split import split_source
from transfuse.engines import check_request
from transfuse.errors import DataError
from transfuse.featurizers import make_featurizer
from transfuse.recipe import Recipe
from transfuse.search import SearchResult
from transfuse.workflow.held_out import HeldOut

AUTO = "auto"  # --backbone auto: the source is chosen by ranking


@dataclass(frozen=True)
class SplitSpec:
    """How labelled data is split: a seeded, stratified ``test_size`` of each class (or the
    manifest's ``split`` column)."""

    test_size: float = 0.2
    seed: int = 0

    def indices(self, source: Source) -> tuple[list[int], list[int]]:
        return split_source(source, test_size=self.test_size, seed=self.seed)


@dataclass(frozen=True)
class FeaturizerSpec:
    """Which featurizer turns items into features (see :func:`~transfuse.featurizers.make_featurizer`)
    and how it runs; ``backbone`` None means the data's modality's default."""

    backbone: str | None = None
    layers: str | list[str] | None = None
    pooling: str | None = None
    weights: str = "pretrained"
    runtime: str = "auto"
    precision: str = "auto"
    long_text: str = "truncate"
    batch_size: int | None = None
    num_workers: int | None = None
    device: str | None = None
    cache: object = True

    def name(self, modality: str) -> str:
        return self.backbone or default_backbone(modality)

    def build(self, modality: str):
        check_request(self.runtime, self.precision)
        return make_featurizer(self.backbone, modality, layers=self.layers, pooling=self.pooling,
                               weights=self.weights, runtime=self.runtime, precision=self.precision,
                               long_text=self.long_text, batch_size=self.batch_size, num_workers=self.num_workers,
                               device=self.device, cache=self.cache)


@dataclass(frozen=True)
class OutputSpec:
    """Where results go: ``out_dir``, or ``transfuse-models/<data>-<what>-<time>`` (see
    :func:`default_out_dir`); ``save=False`` keeps them in memory. A folder that holds something
    other than a transfuse model is refused (before any work) unless ``force``."""

    out_dir: str | Path | None = None
    save: bool = True
    force: bool = False

    def path(self, source: Source, *what: str) -> Path:
        """Where this job's results go; never inside the data folder (the next run would read them as a
        class), whatever ``force`` says."""
        out = Path(self.out_dir) if self.out_dir is not None else default_out_dir(source, *what)
        if source.root is not None:
            data = Path(source.root)
            resolved = out.resolve()
            if resolved == data or data in resolved.parents or resolved in data.parents:
                raise DataError(f"--out {out} is inside the data folder {data} (or holds it): a model there would be "
                                f"read as a class by the next run; choose a folder outside the data")
        return out


@dataclass(frozen=True)
class FitRequest:
    """One ``fit``: the data, its split, the featurizer, the recipe (or ``auto``: search recipes by
    ``cv``-fold cross-validation on the training split), where the model goes, and whether
    unreadable items are left out (``skip_bad``) or stop the job."""

    source: Source
    featurizer: FeaturizerSpec = field(default_factory=FeaturizerSpec)
    recipe: Recipe = field(default_factory=Recipe)
    split: SplitSpec = field(default_factory=SplitSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    auto: bool = False
    cv: int = 5
    skip_bad: bool = False
    budget: float | None = None  # seconds for choosing the source when featurizer.backbone is "auto"
    metric: str = "accuracy"  # what the --auto search maximises: accuracy, balanced_accuracy, macro_f1


@dataclass
class FitResult:
    """What ``fit`` produced: the fitted pipeline, its test metrics and where it was saved."""

    model: Pipeline
    metrics: dict
    out_dir: Path | None
    n_train: int
    n_test: int
    skipped: list[str]
    search: SearchResult | None = None
    held_out: HeldOut | None = None  # the test split's predictions (and the head's input): what the report reads


def default_out_dir(source: Source, *what: str) -> Path:
    """``transfuse-models/<data>-<what...>-<timestamp>`` under the working directory: the one place a
    default output folder is named (fit, finetune, compare)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # names may hold paths (local:/runs/src, keras:model.keras): one folder name of safe characters
    parts = [source.name, *(re.sub(r"[^A-Za-z0-9.,=+-]+", "_", w).strip("_") for w in what), stamp]
    return Path("transfuse-models") / "-".join(parts)


def command_line() -> str | None:
    """The command that is running, when it is the ``transfuse`` CLI (what the report says reproduces it)."""
    import shlex
    import sys

    argv = sys.argv
    return shlex.join(["transfuse", *argv[1:]]) if argv and Path(argv[0]).name == "transfuse" else None
