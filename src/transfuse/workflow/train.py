"""Parameter-based transfer jobs: fine-tune, train a source network from scratch, and compare
both with the feature probe on one split."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from transfuse.backbones import default_backbone
from transfuse.data.source import Source
from transfuse.errors import DataError
from transfuse.featurizers import check_trainable
from transfuse.recipe import Recipe
from transfuse.workflow.fit import fit
from transfuse.workflow.requests import FeaturizerSpec, FitRequest, OutputSpec, SplitSpec

log = logging.getLogger(__name__)


def finetune(source: Source, config, output: OutputSpec | None = None, split: SplitSpec | None = None, *,
             resume: bool = False, skip_bad: bool = False, num_workers: int | None = None, devices: int = 1,
             num_nodes: int = 1, progress: bool | None = None) -> tuple[dict, Path]:
    """Fine-tune ``config.backbone`` (a :class:`~transfuse.finetune.config.FinetuneConfig`) on the
    training split, score on the test split (the same split as ``fit`` for the same seed), save.
    ``devices`` processes per machine on ``num_nodes`` machines train with DDP (docs/scale-out.md).
    Returns the metrics (empty in the extra processes of a DDP run) and the model directory."""
    from transfuse.finetune.train import finetune_source

    output, split = output or OutputSpec(), split or SplitSpec()
    check_trainable(config.backbone)
    if resume and output.out_dir is None:
        raise DataError("--resume needs --out DIR of the run to continue")
    out = output.path(source, config.backbone, config.run_name)
    if devices * num_nodes > 1 and output.out_dir is None:
        if num_nodes > 1:  # each machine would pick its own time-stamped folder
            raise DataError("--num-nodes needs --out DIR (the same on every machine)")
        out = Path(os.environ.setdefault("TRANSFUSE_DDP_OUT", str(out)))  # DDP re-runs the command per process
    metrics = finetune_source(source, config, out, test_size=split.test_size, split_seed=split.seed, resume=resume,
                              skip_bad=skip_bad, num_workers=num_workers, devices=devices, num_nodes=num_nodes,
                              progress=progress, force=output.force)
    return metrics, out


SOURCE_ARCHS = {"small-cnn": "small_cnn", "vgg11": "vgg11", "resnet18": "timm:resnet18", "gru": "gru",
                "lstm": "lstm"}  # --arch -> backbone


def source_backbone(arch: str, source: Source, image_size: int | None = None) -> str:
    """The backbone ``train-source --arch`` trains for ``source``: ``small_cnn@N`` for small-cnn at
    another size, ``gru@W``/``lstm@W`` for frames of W values."""
    if arch not in SOURCE_ARCHS:
        raise DataError(f"unknown source architecture {arch!r}; choose one of {', '.join(SOURCE_ARCHS)}")
    if arch in ("gru", "lstm"):
        if source.kind != "sequence":
            raise DataError(f"--arch {arch} trains on sequences (.npy frames or an .npz array file); this data is "
                            f"{source.kind}: use small-cnn, vgg11 or resnet18")
        if image_size is not None:
            raise DataError("--image-size applies to images; a recurrent network reads sequences of any length")
        from transfuse.backbones.rnn import rnn_name
        from transfuse.data.sequences import sequence_width

        return rnn_name(arch, sequence_width(source.items))
    if source.kind != "image":
        raise DataError(f"--arch {arch} trains on images; this data is {source.kind}"
                        f"{': use gru or lstm' if source.kind == 'sequence' else ''}")
    if arch == "small-cnn" and image_size not in (None, 28):
        return f"small_cnn@{image_size}"
    return SOURCE_ARCHS[arch]


def train_source(source: Source, arch: str | None = None, output: OutputSpec | None = None,
                 split: SplitSpec | None = None, *, image_size: int | None = None, **settings) -> tuple[dict, Path]:
    """Train a network from scratch on a source task and save it as a source for transfer: afterwards
    ``--backbone local:<folder>`` uses it in every command. ``settings`` are
    :class:`~transfuse.finetune.config.FinetuneConfig` fields (epochs, lr, batch_size, patience, ...)
    and :func:`finetune`'s keywords (resume, skip_bad, num_workers, devices, progress). Every layer
    trains at one learning rate (no layer decay: nothing is pretrained).

    >>> train_source(load_source("fashion-source"), "small-cnn", OutputSpec("sources/fashion"))  # doctest: +SKIP
    """
    from transfuse.finetune.config import FinetuneConfig

    arch = arch or ("gru" if source.kind == "sequence" else "small-cnn")
    run_keys = ("resume", "skip_bad", "num_workers", "devices", "num_nodes", "progress")
    run = {k: settings.pop(k) for k in run_keys if k in settings}
    backbone = source_backbone(arch, source, image_size)
    config = FinetuneConfig(backbone=backbone, strategy="full", from_scratch=True, image_size=image_size,
                            **{"layer_decay": 1.0, "probe_epochs": 0, **settings})
    return finetune(source, config, output, split, **run)


def compare_source(source: Source, out_dir: str | Path | None = None, *, backbone: str | None = None,
                   strategies: tuple[str, ...] = ("head", "lp-ft"), epochs: int = 10, image_size: int | None = None,
                   seed: int = 0, test_size: float = 0.2, skip_bad: bool = False, progress: bool | None = None,
                   force: bool = False, **finetune_params) -> list[dict]:
    """Same split, same budget: training from scratch, the feature probe, and each fine-tuning strategy.

    Each run is saved under ``out_dir/<method>`` (default ``transfuse-models/<data>-compare-<time>``),
    a folder that must be new, empty or an earlier comparison (else ``force``); returns one row per
    method.
    """
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.finetune.strategy import parse_strategy

    backbone = backbone or default_backbone(source.kind)
    try:
        check_trainable(backbone)  # before the probe is trained, not after
    except DataError as exc:
        raise DataError(f"{exc}; so there is nothing to compare with the probe") from None
    runs = [("from scratch (full, random init)", "full", True)] + [(f"fine-tune {s}", s, False) for s in strategies]
    configs = [FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=scratch, epochs=epochs,
                              image_size=image_size, seed=seed, **finetune_params) for _, strategy, scratch in runs]
    for config in configs:  # every run can start, before the first one spends its time
        parse_strategy(config.strategy)
        config.check()
    out = OutputSpec(out_dir).path(source, "compare")
    if out.is_dir() and any(out.iterdir()) and not (out / "compare.json").is_file() and not force:
        raise DataError(f"--out {out} holds files that are not an earlier comparison; choose a new folder, or pass "
                        f"--force to replace its runs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text("[]\n")  # marks the folder as a comparison, so a rerun may replace its runs
    split = SplitSpec(test_size=test_size, seed=seed)
    rows = []
    start = time.perf_counter()
    weighted = {"class_weight": finetune_params["class_weight"]} if finetune_params.get("class_weight") else {}
    probe = fit(FitRequest(source=source, featurizer=FeaturizerSpec(backbone=backbone), split=split,
                           recipe=Recipe(head_params=weighted), output=OutputSpec(out / "probe", force=force),
                           skip_bad=skip_bad))
    rows.append({"method": "feature probe (logreg on features)", **metric_summary(probe.metrics),
                 "seconds": time.perf_counter() - start, "model_dir": str(out / "probe")})
    for (label, _, _), config in zip(runs, configs):
        metrics, folder = finetune(source, config, OutputSpec(out / config.run_name, force=force), split,
                                   skip_bad=skip_bad, progress=progress)
        rows.append({"method": label, **metric_summary(metrics), "seconds": metrics["train_seconds"],
                     "model_dir": str(folder)})
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    from transfuse.report import try_report

    try_report(out)
    return rows


def metric_summary(metrics: dict) -> dict:
    """Accuracy, balanced accuracy and macro-F1 of a metrics dict (those it has)."""
    return {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in metrics}
