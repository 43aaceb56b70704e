"""What a fine-tuning run tells the user while it trains: one log line per epoch (which groups
train, at which learning rates, the losses and validation accuracy, the best epoch so far) and, on
a terminal, Lightning's bar on stderr (stdout stays for ``--json``)."""

from __future__ import annotations

import contextlib
import logging
import sys

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger("transfuse.finetune")


class EpochLog(Callback):
    """Logs the plan when training starts, a line per epoch, and the best epoch at the end."""

    def __init__(self) -> None:
        self.best: tuple[float, int] | None = None  # (validation accuracy, epoch)
        self._groups: int | None = None

    def on_train_start(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        kept = getattr(trainer.checkpoint_callback, "best_model_score", None)
        if kept is not None and trainer.current_epoch > 0:  # resumed: the best so far is the checkpoint's
            self.best = (float(kept), 0)  # an epoch before resuming (the checkpoint does not say which)
        rates = [f"{g['lr']:.2g}" for g in trainer.optimizers[0].param_groups] if trainer.optimizers else []
        log.info("fine-tuning %d parameter groups (input to output: %s); learning rates from the head down: %s; "
                 "strategy %s", len(module.groups), ", ".join(name for name, _ in module.groups), ", ".join(rates),
                 module.strategy.name + (f":{module.strategy.n}" if module.strategy.name == "last" else ""))

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.is_global_zero and module.n_trainable != self._groups:
            self._groups = module.n_trainable
            top = [name for name, _ in module.groups[len(module.groups) - max(module.n_trainable, 0):]]
            log.info("epoch %d: training %s", trainer.current_epoch + 1,
                     "every group" if module.n_trainable >= len(module.groups) or module.n_trainable < 0
                     else ", ".join(top) or "nothing")

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        epoch = trainer.current_epoch + 1
        acc = float(m["val_acc"]) if "val_acc" in m else float("nan")
        better = self.best is None or acc > self.best[0]
        if better:
            self.best = (acc, epoch)
        train = f"train loss {float(m['train_loss_epoch']):.3f}, " if "train_loss_epoch" in m else ""
        val = f"val loss {float(m['val_loss']):.3f}, " if "val_loss" in m else ""
        log.info("epoch %d/%d: %s%sval acc %.3f%s", epoch, trainer.max_epochs, train, val, acc,
                 " (best so far)" if better else "")

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero and self.best is not None:
            which = f"epoch {self.best[1]}" if self.best[1] else "an epoch before resuming"
            log.info("best: %s (val acc %.3f); its weights are kept", which, self.best[0])


class CannotCatchUp(Callback):
    """Stops training once the validation accuracy curve cannot reach ``target`` by the last epoch:
    after ``after`` epochs (so the unfrozen network has had some epochs to move), the best accuracy so
    far plus its rise per epoch over the last ``window`` epochs, extended linearly to the planned last
    epoch, is still below ``target``. Curves flatten, so the straight line is the optimistic case:
    a run stopped by it would not have got there. ``record`` keeps the curve and the reason."""

    def __init__(self, target: float, after: int, window: int = 2) -> None:
        self.target, self.after, self.window = target, max(after, window + 1), window
        self.curve: list[float] = []
        self.stopped: str | None = None

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or "val_acc" not in trainer.callback_metrics:
            return
        self.curve.append(float(trainer.callback_metrics["val_acc"]))
        reason = self.verdict(self.curve, trainer.max_epochs)
        if reason is not None:
            self.stopped = reason
            trainer.should_stop = True
            log.info("stopping: %s", reason)

    def verdict(self, curve: list[float], last_epoch: int) -> str | None:
        """Why training should stop after ``curve`` (validation accuracy per epoch), or None."""
        epoch = len(curve)
        if epoch < self.after or epoch >= last_epoch:
            return None
        best = max(curve)
        rise = max(0.0, (best - max(curve[: epoch - self.window])) / self.window)
        reach = best + rise * (last_epoch - epoch)
        if reach >= self.target:
            return None
        return (f"after epoch {epoch} of {last_epoch} the best validation accuracy is {best:.3f}, rising "
                f"{rise:.3f} an epoch over the last {self.window}: at most {reach:.3f} by epoch {last_epoch}, "
                f"below the {self.target:.3f} to reach")


class StderrBar(TQDMProgressBar):
    """Lightning's tqdm bars, written to stderr instead of stdout."""

    def _on_stderr(self, make):
        with contextlib.redirect_stdout(sys.stderr):  # Lightning's bars take sys.stdout as they are made
            return make()

    def init_sanity_tqdm(self):
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._on_stderr(super().init_validation_tqdm)

    def init_predict_tqdm(self):
        return self._on_stderr(super().init_predict_tqdm)

    def init_test_tqdm(self):
        return self._on_stderr(super().init_test_tqdm)
