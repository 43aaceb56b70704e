"""The CLI's vocabulary, defined once: every flag, and the groups of flags commands share.

A flag is one ``Annotated`` alias below (its name, help and meaning); a group is a dataclass of
such fields; :func:`options` adds a group's fields to a command's parameters and hands the command
one instance per group. So ``--precision`` or ``--workers`` mean the same in every command that
takes them, and ``search`` is ``fit`` without the recipe flags instead of a copy of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from transfuse.cli.app import log


def between(low: float | None = None, high: float | None = None):
    """A callback that accepts numbers strictly between ``low`` and ``high`` (None: unbounded), for
    the ranges click's ``min``/``max`` (inclusive) cannot say; the error names the range."""
    def check(value):
        if value is not None and ((low is not None and value <= low) or (high is not None and value >= high)):
            bound = " and ".join(part for part in (f"above {low:g}" if low is not None else "",
                                                   f"below {high:g}" if high is not None else "") if part)
            raise typer.BadParameter(f"{value:g} is out of range; it must be {bound}")
        return value

    return check


# -- flags ------------------------------------------------------------------------------------------
DataArg = Annotated[Optional[Path], typer.Argument(help="Folder with one sub-folder of images (or .txt files, or audio clips) per class, a CSV manifest of files, or a CSV/JSONL table of texts.")]
Manifest = Annotated[Optional[Path], typer.Option("--manifest", help="CSV with columns path,label[,split].")]
TextColumn = Annotated[Optional[str], typer.Option("--text-column", help="Column of a CSV/JSONL table that holds the texts (default: text).")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="Column of a CSV/JSONL table that holds the labels (default: label).")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Leave out unreadable files and empty class folders (with a warning) instead of stopping.")]
TestSize = Annotated[float, typer.Option("--test-size", callback=between(0, 1), help="Fraction of each class held out for testing (ignored when the manifest has a split column).")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seed of the train/test split (and of training).")]
Backbone = Annotated[Optional[str], typer.Option("--backbone", "--backbones", "-b", help="Backbone name (see `transfuse backbones`), timm:<name> or hf:<org/name>; fit and search fuse several comma-separated; auto: rank the sources here and take the best (see transfuse rank). Default: efficientnet_lite0 for images, minilm_l6 for text, speech_embedding for audio; with --auto (and search) and no --layers, ranked as with auto.")]
Layers = Annotated[Optional[str], typer.Option("--layers", "-l", help="Comma-separated tap names (see `transfuse layers`); default: features.")]
Pooling = Annotated[Optional[str], typer.Option("--pooling", help="images: avg (default) | max | gem | avgmax (both side by side) | cls; text: avg (default) | max | avgmax | cls over the tokens; audio: meanstd (default) | avg | max over time")]
Weights = Annotated[str, typer.Option("--weights", help="pretrained | random | PATH to a weights file.")]
LongText = Annotated[str, typer.Option("--long-text", help="Texts longer than the encoder's window: truncate | chunk (read in windows, features averaged).")]


def _seconds(value: Optional[str]) -> Optional[float]:
    """``90``, ``90s``, ``15m``, ``1h`` -> seconds (typer callback)."""
    if value is None:
        return None
    budget = _budget(value)
    if budget.seconds is None or budget.trials is not None:
        raise typer.BadParameter(f"give seconds or a duration like 90s, 15m, 1h; got {value!r}")
    return budget.seconds


def _budget(value: str):
    from transfuse.auto.budget import parse_budget
    from transfuse.errors import DataError

    try:
        return parse_budget(value)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from None


def _auto_budget(value: str) -> str:
    """Checked here (a clear usage error), read again by ``auto`` itself."""
    _budget(value)
    return value


def _choice(*allowed: str):
    """A typer callback that accepts only ``allowed`` (or nothing)."""
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"choose one of {', '.join(allowed)}; got {value!r}")
        return value
    return check


ClassWeight = Annotated[Optional[str], typer.Option("--class-weight", callback=_choice("balanced"), help="balanced: weight each class by the inverse of its frequency (in the head, and in the fine-tuning loss), so rare classes count as much as common ones. Default: off.")]
Metric = Annotated[str, typer.Option("--metric", callback=_choice("accuracy", "balanced_accuracy", "macro_f1"), help="What the cross-validated search (fit --auto, search, auto) maximises: accuracy, balanced_accuracy or macro_f1 (for imbalanced classes).")]
_BUDGET_HELP = ("What may be spent. auto: wall-clock time on this machine (90s, 15m, 1h30m), a number of trials "
                "(40 trials; each cross-validated candidate and each fine-tuning run is one), or both (15m,40t). "
                "fit --backbone auto (or --auto without a backbone): the time for ranking the sources; no new "
                "backbone is started after it.")
Budget = Annotated[Optional[str], typer.Option("--budget", callback=_seconds, help=_BUDGET_HELP)]
AutoBudget = Annotated[str, typer.Option("--budget", callback=_auto_budget, help=_BUDGET_HELP)]
Runtime = Annotated[Optional[str], typer.Option("--runtime", help="Feature extraction engine: auto (the fastest that agrees with eager fp32), torch, compile (torch.compile ahead of time, built once per machine), onnx. Default: auto; a saved model uses the one it was trained with.")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="Numeric precision: auto | fp32 | bf16. Extraction: auto takes bf16 where the hardware has it and the features agree (a saved model: what it was trained with); fine-tuning: auto trains in bf16 on GPUs that support it.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Items per batch (default: 4 on CPU and 64 on GPU for extraction, 32 for fine-tuning).")]
Workers = Annotated[Optional[int], typer.Option("--workers", min=0, help="Worker processes that decode the data (default: auto, none on CPUs with up to 4 cores).")]
Device = Annotated[Optional[str], typer.Option("--device", help="torch device for extraction (default: cuda if available, else cpu).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
Cluster = Annotated[Optional[str], typer.Option("--cluster", help="Extract on a Ray cluster: ray (RAY_ADDRESS, a running `ray start`, or a new local one), or ray:HOST:PORT (join from a node of the cluster; Ray Data does not run through the Ray Client, so not ray://: submit the command as a Ray job instead). Items missing from the cache go to a pool of actors; rows come back into this machine's cache. Needs pip install 'transfuse[ray]'.")]
ClusterWorkers = Annotated[Optional[int], typer.Option("--cluster-workers", min=1, help="Actors on the cluster (default: one per GPU, else one per CPU).")]
FeaturesIn = Annotated[Optional[Path], typer.Option("--features-in", help="A Parquet feature data set from `transfuse extract --features-out`: rows it holds (same backbone, layers, pooling and engine) are read from it instead of being extracted.")]
HeadKind = Annotated[str, typer.Option("--head", help="logreg | svm | ridge | knn | mlp (or a head a plugin adds)")]
HeadParam = Annotated[list[str], typer.Option("--head-param", help="Head hyper-parameter KEY=VALUE (repeatable), e.g. C=0.5.")]
Fusion = Annotated[Optional[str], typer.Option("--fusion", help="How to fuse several layers: concat (per-block standardised) | weighted (learned block weights) | scalar-mix (learned weighted sum of same-width layers, for transformers) | mlp (gated non-linear). Default with several layers: concat.")]
Select = Annotated[Optional[str], typer.Option("--select", help="Selection/reduction, comma-separated: pca:0.95 | pca:64 | variance | kbest:512[:mutual_info] | l1:0.1 | group-lasso:N (keep N layer blocks).")]
Auto = Annotated[bool, typer.Option("--auto", help="Try layers x fusion x selection x C by cross-validation on the training split and keep the best; without --backbone the source is chosen first by ranking, as with --backbone auto.")]
Cv = Annotated[int, typer.Option("--cv", min=2, help="Folds of the cross-validated search (fit --auto, search, auto).")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Where results are written (default: transfuse-models/<data>-<what>-<time>).")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
Force = Annotated[bool, typer.Option("--force", help="Replace whatever --out holds, even when it is not a transfuse model (its files are lost).")]
Strategy = Annotated[Optional[str], typer.Option("--strategy", help="head | last:N | full | lp-ft | gradual (default: lp-ft; full with --from-scratch).")]
Epochs = Annotated[int, typer.Option("--epochs", min=1, help="Training epochs (at most; early stopping may end sooner).")]
ImageSize = Annotated[Optional[int], typer.Option("--image-size", min=16, help="Training and prediction size in pixels (default: the backbone's input size, at most 128).")]
Lr = Annotated[Optional[float], typer.Option("--lr", callback=between(0), help="Learning rate of the new output layer (default: 1e-3 for images, 1e-2 for text).")]
Patience = Annotated[int, typer.Option("--patience", min=1, help="Stop after this many epochs without a better validation accuracy.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue a killed run from <out>/checkpoints/last.ckpt.")]


# -- groups -----------------------------------------------------------------------------------------
@dataclass
class DataOptions:
    """Where the labelled data comes from."""

    data: DataArg = None
    manifest: Manifest = None
    text_column: TextColumn = None
    label_column: LabelColumn = None
    skip_bad: SkipBad = False

    def load(self):
        from transfuse.data import load_source

        return load_source(self.data, self.manifest, skip_bad=self.skip_bad, text_column=self.text_column,
                           label_column=self.label_column)


@dataclass
class SplitOptions:
    """How the data is split into training and test items."""

    test_size: TestSize = 0.2
    seed: Seed = 0

    def spec(self):
        from transfuse.workflow import SplitSpec

        return SplitSpec(test_size=self.test_size, seed=self.seed)


@dataclass
class FeatureOptions:
    """Which featurizer, which of its layers, pooled how."""

    backbone: Backbone = None
    layers: Layers = None
    pooling: Pooling = None
    weights: Weights = "pretrained"
    long_text: LongText = "truncate"
    budget: Budget = None


def cluster_scope(cluster: str | None, workers: int | None):
    """Extraction inside the block runs on ``--cluster`` with ``--cluster-workers`` actors (here
    without it); Ray is imported only when a cluster is given."""
    from transfuse.extract import on_cluster

    if cluster is None and workers is not None:
        raise typer.BadParameter("--cluster-workers needs --cluster")
    return on_cluster(cluster, workers)


@dataclass
class EngineOptions:
    """How features are computed (never what they are)."""

    runtime: Runtime = None
    precision: Precision = None
    batch_size: BatchSize = None
    workers: Workers = None
    device: Device = None
    no_cache: NoCache = False
    cluster: Cluster = None
    cluster_workers: ClusterWorkers = None
    features_in: FeaturesIn = None

    def scope(self):
        """A context in which every extraction runs on ``--cluster`` and reads ``--features-in`` (see
        :mod:`transfuse.extract.context`); nothing of Ray is imported without ``--cluster``. The
        command decorator enters it around the command."""
        from transfuse.extract import features_in

        if self.features_in is not None and not self.features_in.is_dir():
            raise typer.BadParameter(f"--features-in {self.features_in} is not a folder written by "
                                     f"`transfuse extract --features-out`")
        stack = contextlib.ExitStack()
        stack.enter_context(cluster_scope(self.cluster, self.cluster_workers))
        stack.enter_context(features_in(self.features_in))
        return stack

    def featurizer(self, **what):
        """The :class:`~transfuse.workflow.FeaturizerSpec` of ``what`` (backbone, layers, pooling,
        weights, long_text) computed the way these options say."""
        from transfuse.workflow import FeaturizerSpec

        return FeaturizerSpec(**what, runtime=self.runtime or "auto", precision=self.precision or "auto",
                              batch_size=self.batch_size, num_workers=self.workers, device=self.device,
                              cache=not self.no_cache)

    def settings(self) -> dict:
        """Run-time settings of a loaded model: only what was given (unset, it keeps its engine)."""
        given = {"runtime": self.runtime, "precision": self.precision, "batch_size": self.batch_size,
                 "num_workers": self.workers, "device": self.device}
        return {k: v for k, v in given.items() if v is not None} | ({"cache": False} if self.no_cache else {})


@dataclass
class RecipeOptions:
    """What sits between features and head, and the head."""

    head: HeadKind = "logreg"
    head_param: HeadParam = field(default_factory=list)
    class_weight: ClassWeight = None
    fusion: Fusion = None
    select: Select = None
    auto: Auto = False
    cv: Cv = 5
    metric: Metric = "accuracy"

    def head_params(self) -> dict:
        params = {"class_weight": self.class_weight} if self.class_weight else {}
        for item in self.head_param:
            if "=" not in item:
                raise typer.BadParameter(f"--head-param takes KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
        return params


@dataclass
class SearchOptions:
    """What ``search`` takes of the recipe: the head and the folds."""

    head: HeadKind = "logreg"
    class_weight: ClassWeight = None
    cv: Cv = 5
    metric: Metric = "accuracy"


@dataclass
class OutputOptions:
    """Where results go and how they are shown."""

    out: Out = None
    as_json: Json = False
    force: Force = False

    def json(self, result: dict) -> None:
        """``result`` as one JSON line on stdout; without ``--out``, a log line on stderr says where the
        model folder went (the JSON holds it too, as ``model_dir``)."""
        if self.out is None and result.get("model_dir"):
            log.info("no --out given: the model is in %s", result["model_dir"])
        print(json.dumps(result, default=str))


def options(**groups: type):
    """Add the fields of each group (a dataclass of flags) to the decorated command's parameters,
    after its own; the command is called with one instance per group under the group's name, inside
    each group's ``scope()`` where it has one.

    >>> @options(split=SplitOptions)
    ... def cmd(split: SplitOptions) -> float:
    ...     return split.test_size
    >>> [p for p in inspect.signature(cmd).parameters]
    ['test_size', 'seed']
    """
    def decorate(command):
        own = [p for name, p in inspect.signature(command).parameters.items() if name not in groups]
        added, members = [], {}
        for group, cls in groups.items():
            hints = typing.get_type_hints(cls, include_extras=True)
            members[group] = [f.name for f in dataclasses.fields(cls)]
            for f in dataclasses.fields(cls):
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                               annotation=hints[f.name]))
        names = [p.name for p in [*own, *added]]
        clashes = sorted({n for n in names if names.count(n) > 1})
        if clashes:
            raise TypeError(f"{command.__name__}: flags defined twice: {clashes}")
        own_hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=own_hints.get(p.name, p.annotation)) for p in own]

        @functools.wraps(command)
        def run(**kwargs):
            for group, cls in groups.items():
                kwargs[group] = cls(**{name: kwargs.pop(name) for name in members[group]})
            with contextlib.ExitStack() as scopes:  # a group's settings for everything the command calls
                for group in groups:
                    if hasattr(kwargs[group], "scope"):
                        scopes.enter_context(kwargs[group].scope())
                return command(**kwargs)

        run.__signature__ = inspect.Signature([*own, *added])
        run.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        del run.__wrapped__  # typer must read the new signature, not the command's
        return run

    return decorate
