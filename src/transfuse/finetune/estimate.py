"""How long fine-tuning would take here: a few real training steps, timed, before any run is started."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from transfuse.backbones import create_backbone, get_spec
from transfuse.finetune.config import FinetuneConfig
from transfuse.finetune.memory import training_batch
from transfuse.finetune.task import make_task

TIMED_ITEMS = 4  # items per timed step on a CPU


@dataclass(frozen=True)
class EpochEstimate:
    """Seconds per training batch (every group trainable: the dearest case) and per evaluation batch,
    and the resulting seconds per epoch for ``n_fit`` training and ``n_val`` validation items."""

    train_batch: float
    eval_batch: float
    n_fit: int
    n_val: int
    batch_size: int
    setup: float  # building the network (paid again by the run)

    @property
    def epoch(self) -> float:
        return (self.train_batch * self.n_fit + self.eval_batch * max(self.n_val, 1)) / self.batch_size

    def epochs_within(self, seconds: float) -> int:
        """Whole epochs that fit in ``seconds`` after the set-up."""
        return max(0, int((seconds - self.setup) // max(self.epoch, 1e-9)))


def estimate_epoch(items: list[str], labels: list[str], config: FinetuneConfig, n_fit: int, n_val: int,
                   steps: int = 3, within: float | None = None) -> EpochEstimate:
    """Time ``steps`` training steps (after one warm-up step; their median, as one slow step on a
    busy machine would mislead a mean) and as many evaluation batches of
    ``config.backbone`` on the first items, with every parameter trainable, on the device and in the
    precision fine-tuning will use (a GPU in bf16 where it has it, else the CPU in fp32). A step
    reads at most :data:`TIMED_ITEMS` items (the time per item is what is scaled up), and with
    ``within`` (seconds) timing stops as soon as three epochs clearly cannot fit in it.

    >>> estimate_epoch(paths, labels, FinetuneConfig(), n_fit=800, n_val=150).epoch  # doctest: +SKIP
    41.7
    """
    start = time.perf_counter()
    cfg = config.for_backbone(get_spec(config.backbone))
    torch.manual_seed(cfg.seed)
    task = make_task(create_backbone(cfg.backbone, weights="pretrained"), cfg.image_size, cfg.augment)
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Lightning's "auto" accelerator trains
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported() and cfg.precision in ("auto", "bf16")
    network = task.network(len(classes)).to(device).train()
    setup = time.perf_counter() - start
    optimizer = torch.optim.AdamW([p for p in network.parameters()], lr=1e-5)
    micro, _ = training_batch(task, network, cfg.batch_size, device)  # as the run will train (memory allowing)
    timed = micro if device == "cuda" else min(micro, TIMED_ITEMS)  # on a CPU the time per item barely moves
    n = min(len(items), timed * (steps + 1))
    times, hopeless = [], False
    t0 = time.perf_counter()
    for x, target in task.loader(list(items[:n]), y[:n], True, timed, cfg.seed, 0):  # decoding counts
        x, target = _to(x, device), target.to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(network(x).float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / len(target) * cfg.batch_size)  # a short last batch, scaled
        hopeless = within is not None and 3 * times[-1] * n_fit / cfg.batch_size > 2 * within
        if hopeless:
            break  # even the warm-up says so: no need to time more
        t0 = time.perf_counter()
    train_batch = float(np.median(times[1:] or times))
    network.eval()
    evals = []
    with torch.inference_mode():
        t0 = time.perf_counter()
        for x, target in task.loader(list(items[:n]), y[:n], False, timed, cfg.seed, 0):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                network(_to(x, device))
            if device == "cuda":
                torch.cuda.synchronize()
            evals.append((time.perf_counter() - t0) / len(target) * cfg.batch_size)
            if hopeless:
                break
            t0 = time.perf_counter()
    return EpochEstimate(train_batch=train_batch, eval_batch=float(np.median(evals)), n_fit=n_fit, n_val=n_val,
                         batch_size=cfg.batch_size, setup=setup)


def _to(x, device: str):
    """A batch (a tensor, or a dict of them for text) on ``device``."""
    return x.to(device) if torch.is_tensor(x) else {k: v.to(device) for k, v in x.items()}
