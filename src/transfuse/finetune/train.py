"""Fine-tune a backbone on a labelled source with Lightning; the result is saved as a
:class:`~transfuse.finetune.model.FinetunedModel` part in a model directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from transfuse.atomic import atomic_write_text, permissions
from transfuse.backbones import check_modality, create_backbone, get_spec
from transfuse.config import default_workers
from transfuse.data.fingerprint import digest_ids
from transfuse.data.source import Source
from transfuse.data.split import split_source, without
from transfuse.errors import CorruptInputError, DataError, ModelDirError
from transfuse.finetune.config import FinetuneConfig
from transfuse.finetune.memory import training_batch
from transfuse.finetune.model import FinetunedModel
from transfuse.finetune.strategy import parse_strategy
from transfuse.finetune.task import make_task
from transfuse.modeldir import TRAINING_ITEMS, save_parts
from transfuse.modeldir.destination import RUN_ENTRIES, RUN_FILE, check_destination

log = logging.getLogger(__name__)
# Learning rates when none is given, per modality: (new output layer, top pretrained group or None for
# lr * layer_decay). Transformers drift from their pretrained solution at image-CNN rates, and with
# few texts a head at 1e-3 gets too few steps to learn (measured in benchmarks/text.py --finetune).
DEFAULT_LRS = {"image": (1e-3, None), "text": (1e-2, 2e-5), "sequence": (3e-3, None)}


def _precision(choice: str) -> str:
    """Training precision: ``fp32`` (``32`` also), ``bf16`` (mixed), or ``auto`` (bf16 on GPUs that have it)."""
    if choice in ("fp32", "32"):
        return "32-true"
    if choice == "bf16":
        return "bf16-mixed"
    if choice != "auto":
        raise DataError(f"precision must be auto, fp32 or bf16, got {choice!r}")
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def finetune_source(source: Source, cfg: FinetuneConfig, out_dir: str | Path, *, test_size: float = 0.2,
                    split_seed: int = 0, resume: bool = False, skip_bad: bool = False,
                    num_workers: int | None = None, devices: int = 1, num_nodes: int = 1, progress: bool | None = None,
                    force: bool = False, max_seconds: float | None = None, callbacks: Sequence = ()) -> dict:
    """Fine-tune ``cfg.backbone`` on the train split of ``source``; score on the test split; save to ``out_dir``.

    The train/test split is the same as ``fit``'s for the same seed, so probe and fine-tune numbers
    compare. Returns the test metrics (also in ``metrics.json``). ``out_dir`` must be new, empty, a
    transfuse model (replaced whole at the end; a previous run's checkpoints and logs are cleared
    first) or, with ``resume``, the folder of the run to continue; other contents need ``force``.

    ``devices > 1`` trains with DDP, one process per device (GPUs, or CPU processes when there is
    no GPU); Lightning starts the extra processes by re-running the current command, so call it
    from a script or the CLI, not a notebook. ``num_nodes > 1`` runs the same command on each machine
    (``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` set, or under ``torchrun``); only the first
    process of the first machine prepares ``out_dir`` and saves. Only the first process scores and saves; the others
    return an empty dict. ``max_seconds`` stops training once that much time has passed (Lightning's
    ``max_time``; the best epoch so far is what is kept). ``callbacks`` are more Lightning callbacks
    for the trainer (``auto`` stops a run that cannot catch up with its probe).

    >>> finetune_source(load_source("examples/fashion"), FinetuneConfig(strategy="lp-ft", epochs=5), "m")  # doctest: +SKIP
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    if devices < 1 or num_nodes < 1:
        raise DataError(f"devices and num_nodes must be at least 1, got {devices} and {num_nodes}")
    from transfuse.evaluate import PREDICTIONS, classification_metrics, item_names, plot_confusion, write_predictions
    from transfuse.finetune.callbacks import EpochLog, StderrBar
    from transfuse.finetune.module import TransferModule
    from transfuse.report import try_report

    strategy = parse_strategy(cfg.strategy)
    cfg.check()
    cfg = cfg.for_backbone(get_spec(cfg.backbone))
    precision = _precision(cfg.precision)
    check_modality([cfg.backbone], source.kind)
    train, test = split_source(source, test_size=test_size, seed=split_seed)  # missing classes fail here
    classes = source.classes
    out = Path(out_dir)
    run = {"backbone": cfg.backbone, "from_scratch": cfg.from_scratch, "strategy": cfg.strategy,
           "image_size": cfg.image_size, "classes": classes, "seed": cfg.seed, "split": [test_size, split_seed],
           "batch_size": cfg.batch_size, "lr": [cfg.lr, cfg.backbone_lr, cfg.layer_decay, cfg.weight_decay, cfg.l2sp],
           "schedule": [cfg.probe_epochs, cfg.unfreeze_every, cfg.augment, cfg.val_fraction],
           **({"class_weight": cfg.class_weight} if cfg.class_weight else {})}  # absent: runs from before resume
    created = None if resume else next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    first = _first_process()
    resumed_epoch = _start_run(out, run, resume, force, first=first)  # before any heavy work
    if not first:
        created = None  # a failure here must not remove the folder the first process works in
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before building: timm draws an init first
    try:
        backbone = create_backbone(cfg.backbone, weights="random" if cfg.from_scratch else "pretrained")
        task = make_task(backbone, cfg.image_size, cfg.augment)
        bad = task.unreadable(source.items)
        if bad and not skip_bad:
            raise CorruptInputError.unreadable(bad, len(source), cached=False)
    except BaseException:
        if created is not None:  # refused before training: leave none of the folders this run made
            shutil.rmtree(created, ignore_errors=True)
        raise
    if bad:
        log.warning("skipped %d unreadable files", len(bad))
        bad_set = set(bad)
        train, test = without(source, train, test, {i for i, p in enumerate(source.items) if p in bad_set})
    y = np.array([classes.index(lab) for lab in source.labels])
    fit_idx, val_idx = validation_split(np.asarray(train), y, cfg.val_fraction, cfg.seed)

    network = task.network(len(classes))
    head_lr, top_lr = DEFAULT_LRS[task.modality]
    if cfg.from_scratch:
        top_lr = None  # a random encoder learns at the head's rate (decayed), not at a fine-tuning rate
    module = TransferModule(network, task.groups(), strategy, lr=head_lr if cfg.lr is None else cfg.lr,
                            layer_decay=cfg.layer_decay,
                            weight_decay=cfg.weight_decay, probe_epochs=cfg.probe_epochs,
                            unfreeze_every=cfg.unfreeze_every, l2sp=cfg.l2sp,
                            backbone_lr=top_lr if cfg.backbone_lr is None else cfg.backbone_lr, seed=cfg.seed,
                            class_weights=_class_weights(cfg.class_weight, y[fit_idx], len(classes)))

    workers = default_workers(len(train), "cuda" if torch.cuda.is_available() else "cpu") if num_workers is None \
        else num_workers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    micro, accumulate = training_batch(task, network, cfg.batch_size, device)

    def loader(idx, train: bool):
        return task.loader([source.items[i] for i in idx], y[idx], train, micro if train else cfg.batch_size,
                           cfg.seed, workers)

    show = log.getEffectiveLevel() <= logging.INFO if progress is None else progress
    bar = show and sys.stderr.isatty()  # Lightning's bar on a terminal; in a log file EpochLog's lines say the same
    if log.getEffectiveLevel() > logging.DEBUG:  # Lightning's start-up chatter only at debug level
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    last = out / "checkpoints" / "last.ckpt"
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_acc", mode="max",
                                  save_last=True)
    distributed = devices * num_nodes > 1
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator="auto", devices=devices, num_nodes=num_nodes,
        accumulate_grad_batches=accumulate,
        max_time=None if max_seconds is None else timedelta(seconds=max(1.0, max_seconds)),
        strategy=DDPStrategy(find_unused_parameters=True) if distributed else "auto",  # frozen groups get no grads
        precision=precision, deterministic=True, logger=_loggers(out, resumed_epoch),
        enable_progress_bar=bar, enable_model_summary=False,
        callbacks=[checkpoints, EarlyStopping(monitor="val_acc", mode="max", patience=cfg.patience), EpochLog(),
                   *([StderrBar()] if bar else []), *callbacks],
        log_every_n_steps=1,
    )
    ckpt = str(last) if resume else None
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning's own deprecation notice
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")  # run.json
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")  # a resumed run's log
        try:
            trainer.fit(module, loader(fit_idx, True), loader(val_idx, False), ckpt_path=ckpt)
        except RuntimeError as exc:
            if not resume or "size mismatch" not in str(exc) and "Missing key" not in str(exc):
                raise
            raise DataError(f"the checkpoint in {out / 'checkpoints'} was trained with another backbone or other "
                            f"classes; resume it with the data and options it was started with, or start a new "
                            f"run without --resume") from None
    for ckpt_file in (out / "checkpoints").glob("*.ckpt"):  # written private by Lightning; shared like the rest
        ckpt_file.chmod(permissions(0o666))
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    best = checkpoints.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    network.cpu().load_state_dict({k.removeprefix("model."): v for k, v in state.items()})

    model = FinetunedModel(network.eval(), classes, task, cfg)
    proba = model.predict_proba([source.items[i] for i in test])
    truth, predicted = [classes[i] for i in y[test]], [classes[i] for i in proba.argmax(1)]
    metrics = classification_metrics(truth, predicted, classes=classes)
    metrics["split"] = {"train": len(fit_idx), "validation": len(val_idx), "test": len(test), "seed": split_seed}
    metrics["train_seconds"] = seconds
    metrics["epochs_run"] = int(trainer.current_epoch)
    metrics["precision"] = precision
    metrics["devices"] = trainer.world_size  # processes that trained
    title = f"{cfg.backbone} {cfg.strategy}{' (from scratch)' if cfg.from_scratch else ''}, test split"
    seen = digest_ids([source.items[i] for i in train], source.kind)  # what evaluate must not score as new
    shown = item_names([source.items[i] for i in test], source.kind)
    save_parts([("model", model)], out, metrics=metrics, keep=tuple(sorted(RUN_ENTRIES)), force=force,
               data={TRAINING_ITEMS: seen}, extra={"data": {"name": source.name, "kind": source.kind,
                                                            "n_items": len(source), "per_class": source.counts()}},
               files={"confusion_matrix.png": lambda path: plot_confusion(metrics, path, title=title),
                      PREDICTIONS: lambda path: write_predictions(path, shown, truth, predicted, proba, classes)})
    try_report(out)
    return metrics


def _loggers(out: Path, resumed_epoch: int | None = None) -> list:
    """CSV metrics always (``<out>/logs/metrics.csv``); TensorBoard too when it is installed. A
    resumed run keeps the CSV rows of the epochs its checkpoint holds (Lightning's writer would start
    the file afresh) and adds the rest."""
    import csv
    from importlib.util import find_spec

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    csv_logger = CSVLogger(out, name="logs", version="")
    if resumed_epoch is not None:
        kept = []
        try:
            with open(out / "logs" / "metrics.csv", newline="") as fh:
                kept = [row for row in csv.DictReader(fh) if (epoch := _epoch(row)) is not None and epoch <= resumed_epoch]
        except (OSError, csv.Error, ValueError):  # no log yet, or a damaged one: start it afresh
            kept = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "previous log files will be deleted": their rows are written back
            writer = csv_logger.experiment  # created now: it removes the old file
        for row in kept:
            try:
                values = {k: float(v) for k, v in row.items() if v not in ("", None) and k and k != "step"}
                writer.log_metrics(values, step=int(float(row["step"])) if row.get("step") else None)
            except (TypeError, ValueError):
                continue
        writer.save()
    loggers = [csv_logger]
    if find_spec("tensorboard") or find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(out, name="logs", version="", default_hp_metric=False))
    return loggers


def _epoch(row: dict) -> float | None:
    try:
        return float(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def _first_process() -> bool:
    """Whether this is the first process of a (DDP) run, from what torchrun or Lightning's launchers
    set (SLURM's srun included): the others must not clear a folder the first one may be writing to."""
    ranks = ("RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(name) or 0) == 0 for name in ranks)


def _start_run(out: Path, run: dict, resume: bool, force: bool, first: bool = True) -> int | None:
    """Check the run's folder and prepare it: a new run clears a previous run's checkpoints and logs
    and records what it is started with (``checkpoints/run.json``); ``resume`` checks that record
    and returns the epoch the last checkpoint holds. Only the ``first`` process of a DDP run writes."""
    if not first:  # the first process checks and prepares the folder; the others may run before or after it
        return None
    check_destination(out, force=force, run=True)
    if resume:
        return _resumable(out, run)
    try:
        for stale in RUN_ENTRIES:  # a previous run's checkpoints would be versioned beside this run's
            shutil.rmtree(out / stale, ignore_errors=True)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RUN_FILE, json.dumps(run, indent=1) + "\n")
    except OSError as exc:
        raise ModelDirError(f"cannot write {out}: {exc.strerror or exc}; choose a writable --out") from None
    return None


def _resumable(out: Path, run: dict) -> int:
    """The epoch the last checkpoint of the run in ``out`` holds, after checking it can be resumed with
    this data and these options (a clear error instead of a size mismatch deep in the network)."""
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ModelDirError(f"nothing to resume: {last} does not exist; start without --resume")
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, or not a checkpoint
        raise ModelDirError(f"checkpoint {last} is corrupt ({type(exc).__name__}); delete it and start "
                            f"without --resume") from None
    try:
        saved = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        saved = {}  # a run of a version before run.json: a mismatch shows when the checkpoint is loaded
    differ = [key for key in run if key in saved and saved[key] != run[key]]
    if differ:
        what = "; ".join(f"{k}: {saved[k]} then, {run[k]} now" for k in differ)
        raise DataError(f"the run in {out} cannot be resumed with other settings or data ({what}); "
                        f"resume it as it was started, or start a new run without --resume")
    return int(checkpoint.get("epoch", 0))


def validation_split(train: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out of the training split for early stopping (one item per class at least,
    and never the last item of a class)."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y[train]):
        idx = train[y[train] == c]
        if len(idx) >= 2:
            val.extend(rng.choice(idx, size=min(len(idx) - 1, max(1, round(fraction * len(idx)))), replace=False))
    val = np.sort(np.asarray(val, dtype=int))
    return np.setdiff1d(train, val), val


def _class_weights(how: str | None, y: np.ndarray, k: int) -> torch.Tensor | None:
    """``balanced``: each class weighted by n / (k · its count) on the items trained on (as
    scikit-learn's ``class_weight="balanced"``); None: plain cross-entropy."""
    if how is None:
        return None
    counts = np.bincount(y, minlength=k).astype(np.float64)
    weights = len(y) / (k * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
