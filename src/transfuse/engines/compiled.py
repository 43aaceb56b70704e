"""The compiled engine: a backbone's network with every tap as an output, compiled ahead of time by
torch.compile (torch.export, then AOTInductor with frozen weights) into one ``.pt2`` package per
backbone, precision and machine, and loaded in a fraction of a second afterwards."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.atomic import exclusive_lock
from transfuse.cache import make_key
from transfuse.engines.hardware import autocast, device_kind, engine_versions, quiet_inductor
from transfuse.errors import DataError

if TYPE_CHECKING:  # torch is imported where a package is built or run, not to name one
    import torch

log = logging.getLogger(__name__)
COMPILE_FORMAT = 1  # bump when the compiled network changes (its inputs, outputs or wrapper)


def compile_id(backbone: str, weights_id: str, device: str) -> str:
    """Identity of a compiled package: the network, the device it was built for (a CPU's model and
    instruction sets: its kernels use all of them), library and transfuse versions."""
    from transfuse import __version__

    return make_key(kind="aoti", format=COMPILE_FORMAT, backbone=backbone, weights=weights_id,
                    device=device_kind(device), versions=engine_versions(), transfuse=__version__)


class CompiledRunner:
    """Runs a compiled package: input tensors in, a dict of the raw outputs of every tap out."""

    def __init__(self, path: str, outputs: list[str], device: str = "cpu") -> None:
        import torch

        with quiet_inductor():
            import torch._inductor as inductor

            index = torch.device(device).index
            self.model = inductor.aoti_load_package(path, device_index=-1 if index is None else index)
        self.path, self.taps = path, list(outputs)

    def __call__(self, tensors: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        outputs = self.model(*tensors)
        if len(outputs) != len(self.taps):
            raise DataError(f"the compiled package {self.path} has {len(outputs)} outputs for {len(self.taps)} "
                            f"layers; delete that file and run again (it is built anew)")
        return dict(zip(self.taps, outputs))


def _under_autocast(network, device: str, precision: str):
    """``network`` run under bf16 autocast (or not), so the precision is compiled into the package."""
    from torch import nn

    class Autocast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *tensors):
            with autocast(device, precision):
                return self.network(*tensors)

    return Autocast()


def compile_network(backbone, sample: tuple[torch.Tensor, ...], precision: str, device: str, path: Path,
                    broken: int | None = None) -> str:
    """Compile ``backbone.tap_network`` with every tap as an output into a ``.pt2`` package at ``path``;
    the batch (and token) axes stay dynamic. Built beside and renamed, so a killed compile leaves no
    half file; one build at a time (a file lock), and a working package another process built
    meanwhile is used as it is. ``broken``: the inode of a package at ``path`` found not to work,
    replaced (not one built since). Callers drop loaded copies of ``path`` afterwards."""
    import torch
    from torch.export import Dim

    network = _under_autocast(backbone.tap_network(backbone.tap_names).eval(), device, precision)
    # every input's batch (and token) axes dynamic, their ranges inferred by the exporter
    shapes = tuple({axis: Dim.DYNAMIC for axis in backbone.dynamic_axes} for _ in backbone.input_names)
    sample = tuple(_two_or_more(t) for t in sample)  # a batch of one would be compiled as a constant
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_suffix(".lock")):  # one build at a time; the others then load it
        if path.is_file():
            if broken is not None and path.stat().st_ino == broken:
                path.unlink()
            elif _opens(path, backbone.tap_names, device):
                return str(path)
        partial = path.with_name(f"{path.stem}.{socket.gethostname()}.{os.getpid()}.partial.pt2")
        log.info("compiling %s (%s) with torch.compile ahead of time: once per machine, about half a minute on "
                 "2 cores; kept in %s", backbone.name, precision, path.parent)
        try:
            with quiet_inductor(), warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                import torch._inductor as inductor

                program = torch.export.export(network, sample, dynamic_shapes=(shapes,))
                with inductor.config.patch(freezing=True):  # weights as constants: prepacked kernels
                    inductor.aoti_compile_and_package(program, package_path=str(partial))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return str(path)


def _opens(path: Path, outputs: list[str], device: str) -> bool:
    try:
        CompiledRunner(str(path), outputs, device)
        return True
    except Exception as exc:  # truncated, or from an incompatible compiler
        log.info("building again: %s", exc)
        return False


def _two_or_more(t: torch.Tensor) -> torch.Tensor:
    import torch

    if t.shape[0] >= 2:
        return t
    doubled = torch.cat([t, t])
    return doubled.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else doubled


def package_built(store, backbone: str, weights_id: str, precision: str, device: str) -> bool:
    """Whether this machine already has the compiled package of a backbone in a precision
    (``store``: an :class:`~transfuse.engines.store.EngineStore`)."""
    return store.has_package(compile_id(backbone, weights_id, device), precision)
