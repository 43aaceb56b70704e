"""How many items a training step may hold in memory. Fine-tuning a transformer on long texts keeps
every layer's activations for the backward pass: for mpnet at its 384-token window that is about
450 MB per text in fp32, so the default batch of 32 needs some 15 GB more than the model itself
(and a 2-core, 24 GB machine was killed by the kernel for it). When a batch would not fit in half
the memory free now, training runs smaller micro-batches and accumulates their gradients over the
same number of items per optimiser step."""

from __future__ import annotations

import logging
import math

log = logging.getLogger("transfuse.finetune")
SHARE = 0.5  # of the memory free when training starts


def free_bytes(device: str) -> int | None:
    """Memory free for training: on CUDA the device's total less what other processes hold there is
    not knowable the same way from every DDP process, so 80 % of its total (every process must choose
    the same micro-batch, or their all-reduces stop matching); else the machine's ``MemAvailable``."""
    if device.startswith("cuda"):
        import torch

        return int(0.8 * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def activation_bytes(task) -> float | None:
    """Activations kept for the backward pass per training item, for a transformer text encoder at its
    full window (Korthikanti et al. 2022: ``s h (34 + 5 a s / h)`` bytes per layer in 16-bit, twice
    that in fp32); None for other networks (images at their sizes fit in batches of 32)."""
    config = getattr(getattr(task.backbone, "model", None), "config", None)
    if task.modality != "text" or config is None:
        return None
    s, h = task.backbone.input_spec.max_tokens, config.hidden_size
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    return layers * s * h * (34 + 5 * heads * s / h) * 2  # fp32: twice the 16-bit figure


def training_batch(task, network, batch_size: int, device: str) -> tuple[int, int]:
    """``(micro-batch, accumulation)``: ``batch_size`` items per optimiser step, in micro-batches
    whose activations (with the weights, gradients and optimiser state) fit in :data:`SHARE` of the
    free memory (counted in fp32: mixed precision keeps part of them in fp32 anyway)."""
    per_item, free = activation_bytes(task), free_bytes(device)
    if per_item is None or free is None:
        return batch_size, 1
    weights = 16 * sum(p.numel() for p in network.parameters())  # fp32 weights, gradients, two Adam moments
    room = SHARE * free - weights
    fits = int(room // per_item)
    if fits >= batch_size:
        return batch_size, 1
    accumulate = math.ceil(batch_size / max(fits, 1))
    micro = math.ceil(batch_size / accumulate)  # about the same items per step as asked
    log.info("%s needs about %.0f MB per text in training at its %d-token window: batches of %d with gradients "
             "accumulated over %d (%d per step), to stay within half of the %.1f GB free", task.backbone.name,
             per_item / 2**20, task.backbone.input_spec.max_tokens, micro, accumulate, micro * accumulate,
             free / 2**30)
    return micro, accumulate
