"""Fine-tune a backbone on a labelled source with Lightning, and the saved model that predicts with it."""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from transfuse.backbones import check_modality, create_backbone
from transfuse.data.source import Source
from transfuse.data.split import split_source
from transfuse.errors import CorruptInputError, DataError, ModelDirError
from transfuse.finetune.strategy import parse_strategy
from transfuse.finetune.task import make_task

log = logging.getLogger(__name__)
MODEL_WEIGHTS = "model.safetensors"
# Learning rates when none is given, per modality: (new output layer, top pretrained group or None for
# lr * layer_decay). Transformers drift from their pretrained solution at image-CNN rates, and with
# few texts a head at 1e-3 gets too few steps to learn (measured in benchmarks/text.py --finetune).
DEFAULT_LRS = {"image": (1e-3, None), "text": (1e-2, 2e-5)}


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides what is trained (saved in config.json)."""

    backbone: str = "efficientnet_lite0"
    strategy: str = "lp-ft"
    from_scratch: bool = False
    epochs: int = 10
    lr: float | None = None  # new output layer; None: 1e-3 (images), 1e-2 (text)
    backbone_lr: float | None = None  # top pretrained group; None: lr * layer_decay (images), 2e-5 (text)
    layer_decay: float = 0.75
    weight_decay: float = 1e-4
    l2sp: float = 0.0
    probe_epochs: int = 3
    unfreeze_every: int = 1
    image_size: int = 128
    batch_size: int = 32
    patience: int = 5
    val_fraction: float = 0.15
    augment: bool = True
    precision: str = "auto"
    seed: int = 0


def _precision(choice: str) -> str:
    if choice == "32":
        return "32-true"
    if choice == "bf16":
        return "bf16-mixed"
    if choice != "auto":
        raise DataError(f"precision must be auto, 32 or bf16, got {choice!r}")
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def finetune_source(source: Source, cfg: FinetuneConfig, out_dir: str | Path, *, test_size: float = 0.2,
                    split_seed: int = 0, resume: bool = False, skip_bad: bool = False,
                    num_workers: int = 0, devices: int = 1, progress: bool | None = None) -> dict:
    """Fine-tune ``cfg.backbone`` on the train split of ``source``; score on the test split; save to ``out_dir``.

    The train/test split is the same as ``fit``'s for the same seed, so probe and fine-tune numbers
    compare. Returns the test metrics (also in ``metrics.json``).

    ``devices > 1`` trains with DDP, one process per device (GPUs, or CPU processes when there is
    no GPU); Lightning starts the extra processes by re-running the current command, so call it
    from a script or the CLI, not a notebook. Only the first process scores and saves; the others
    return an empty dict.

    >>> finetune_source(load_source("examples/fashion"), FinetuneConfig(strategy="lp-ft", epochs=5), "m")  # doctest: +SKIP
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    from transfuse.evaluate import classification_metrics, plot_confusion
    from transfuse.finetune.module import TransferModule

    strategy = parse_strategy(cfg.strategy)
    precision = _precision(cfg.precision)
    check_modality([cfg.backbone], source.kind)
    train, test = split_source(source, test_size=test_size, seed=split_seed)  # missing classes fail here
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before building: timm draws an init first
    backbone = create_backbone(cfg.backbone, weights="random" if cfg.from_scratch else "pretrained")
    task = make_task(backbone, cfg.image_size, cfg.augment)
    bad = task.unreadable(source.items)
    if bad and not skip_bad:
        listing = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CorruptInputError(f"{len(bad)} of {len(source)} files could not be read as images: {listing}; "
                                f"fix or remove them, or pass --skip-bad to leave them out", bad)
    if bad:
        log.warning("skipped %d unreadable files", len(bad))
        bad_set = set(bad)
        keep = [i for i, p in enumerate(source.items) if p not in bad_set]
        source = source.subset(keep)
        train, test = split_source(source, test_size=test_size, seed=split_seed)
    classes = source.classes
    y = np.array([classes.index(lab) for lab in source.labels])
    fit_idx, val_idx = _validation_split(np.asarray(train), y, cfg.val_fraction, cfg.seed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = task.network(len(classes))
    head_lr, top_lr = DEFAULT_LRS[task.modality]
    if cfg.from_scratch:
        top_lr = None  # a random encoder learns at the head's rate (decayed), not at a fine-tuning rate
    module = TransferModule(network, task.groups(), strategy, lr=head_lr if cfg.lr is None else cfg.lr,
                            layer_decay=cfg.layer_decay,
                            weight_decay=cfg.weight_decay, probe_epochs=cfg.probe_epochs,
                            unfreeze_every=cfg.unfreeze_every, l2sp=cfg.l2sp,
                            backbone_lr=top_lr if cfg.backbone_lr is None else cfg.backbone_lr)

    def loader(idx, train: bool):
        return task.loader([source.items[i] for i in idx], y[idx], train, cfg.batch_size, cfg.seed, num_workers)

    show = log.getEffectiveLevel() <= logging.INFO if progress is None else progress
    if log.getEffectiveLevel() > logging.DEBUG:  # Lightning's start-up chatter only at debug level
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    checkpoints = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_acc", mode="max",
                                  save_last=True)
    if devices < 1:
        raise DataError(f"devices must be at least 1, got {devices}")
    trainer = L.Trainer(
        max_epochs=cfg.epochs, accelerator="auto", devices=devices,
        strategy=DDPStrategy(find_unused_parameters=True) if devices > 1 else "auto",  # frozen groups get no grads
        precision=precision, deterministic=True, logger=_loggers(out), enable_progress_bar=show,
        enable_model_summary=False,
        callbacks=[checkpoints, EarlyStopping(monitor="val_acc", mode="max", patience=cfg.patience)],
        log_every_n_steps=1,
    )
    last = out / "checkpoints" / "last.ckpt"
    ckpt = None
    if resume:
        if not last.is_file():
            raise ModelDirError(f"nothing to resume: {last} does not exist; start without --resume")
        _check_checkpoint(last)
        ckpt = str(last)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec.*")  # Lightning's own deprecation notice
        trainer.fit(module, loader(fit_idx, True), loader(val_idx, False), ckpt_path=ckpt)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    best = checkpoints.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    network.cpu().load_state_dict({k.removeprefix("model."): v for k, v in state.items()})

    model = FinetunedModel(network.eval(), classes, task)
    proba = model.predict_proba([source.items[i] for i in test])
    metrics = classification_metrics([classes[i] for i in y[test]], [classes[i] for i in proba.argmax(1)],
                                     classes=classes)
    metrics["split"] = {"train": len(fit_idx), "validation": len(val_idx), "test": len(test), "seed": split_seed}
    metrics["train_seconds"] = seconds
    metrics["epochs_run"] = int(trainer.current_epoch)
    metrics["precision"] = precision
    metrics["devices"] = trainer.world_size  # processes that trained
    model.save(out, cfg, metrics)
    plot_confusion(metrics, out / "confusion_matrix.png", title=f"{cfg.backbone} {cfg.strategy}"
                   f"{' (from scratch)' if cfg.from_scratch else ''}, test split")
    return metrics


def _loggers(out: Path) -> list:
    """CSV metrics always (``<out>/logs/metrics.csv``); TensorBoard too when it is installed."""
    from importlib.util import find_spec

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [CSVLogger(out, name="logs", version="")]
    if find_spec("tensorboard") or find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(out, name="logs", version="", default_hp_metric=False))
    return loggers


def _validation_split(train: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def _check_checkpoint(path: Path) -> None:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelDirError(f"checkpoint {path} is corrupt ({type(exc).__name__}); delete it and start "
                            f"without --resume") from None


class FinetunedModel:
    """A fine-tuned network with its classes and input preparation: ``predict_proba(items)``, ``save``,
    ``load``. Items are image paths or texts, as the backbone's modality says."""

    def __init__(self, model: torch.nn.Module, classes: list[str], task) -> None:
        self.model, self.classes_, self.task = model, np.asarray(classes), task
        self.modality = task.modality

    @torch.inference_mode()
    def scores(self, items: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(readable mask, probabilities of the readable items)``, decoding every file once."""
        self.model.eval()
        device = next(self.model.parameters()).device
        ok = np.zeros(len(items), dtype=bool)
        proba = np.zeros((len(items), len(self.classes_)), dtype=np.float32)
        for x, idx, good in self.task.predict_batches(list(items), batch_size):  # batches may come in any order
            ok[idx.numpy()] = good.numpy()
            if good.any():
                x = x[good].to(device) if torch.is_tensor(x) else {k: v[good].to(device) for k, v in x.items()}
                proba[idx[good].numpy()] = torch.softmax(self.model(x).float(), 1).cpu().numpy()
        return ok, proba[ok]

    def predict_proba(self, paths: list[str], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, one row per path (raises for unreadable files)."""
        from transfuse.extract import unreadable_error

        ok, proba = self.scores(paths, batch_size)
        if not ok.all():
            raise unreadable_error([p for p, good in zip(paths, ok) if not good], len(paths))
        return proba

    def predict(self, paths: list[str]) -> np.ndarray:
        return self.classes_[self.predict_proba(paths).argmax(1)]

    def save(self, out: Path, cfg: FinetuneConfig, metrics: dict) -> None:
        from safetensors.torch import save_file

        from transfuse.atomic import atomic_write_text
        from transfuse.pipeline import FORMAT_VERSION, _versions

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(out / MODEL_WEIGHTS))
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        config = {"format_version": FORMAT_VERSION, "kind": "finetuned", "modality": self.modality,
                  "finetune": dict(cfg.__dict__), "classes": [str(c) for c in self.classes_],
                  "image_size": cfg.image_size, "versions": _versions()}
        atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, config: dict) -> "FinetunedModel":
        from safetensors.torch import load_file

        try:
            cfg = FinetuneConfig(**config["finetune"])
            classes = config["classes"]
            task = make_task(create_backbone(cfg.backbone, weights="random"), cfg.image_size, augment=False)
            network = task.network(len(classes))
            network.load_state_dict(load_file(str(path / MODEL_WEIGHTS)))
        except (KeyError, TypeError) as exc:
            raise ModelDirError(f"{path / 'config.json'} is incomplete ({exc!r}); fine-tune again") from None
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelDirError(f"cannot load {path / MODEL_WEIGHTS} ({exc}); fine-tune again") from None
        return cls(network.eval(), classes, task)
