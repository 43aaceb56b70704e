"""Reaching a Ray cluster: the ``--cluster`` address, the connection, and the worker pool's size.

``ray`` joins the cluster that ``RAY_ADDRESS`` or a running ``ray start`` names, or starts one on
this machine; ``ray:HOST:PORT`` joins the cluster whose head listens there (the driver runs on a
node of it). ``ray://`` (the Ray Client) is refused with the way round it: Ray Data, which runs the
actor pools, does not work through the Ray Client (ray-project/ray#48682). Ray is imported only
here and only when a cluster is asked for; an address that does not answer fails in seconds with
a message, not after Ray's minutes of retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
from dataclasses import dataclass

from transfuse.errors import ClusterError

log = logging.getLogger(__name__)
INSTALL = "pip install 'transfuse[ray]'"
# what every worker must see as this process does: whether it may download weights
SHARED_ENV = ("HF_HUB_OFFLINE", "TRANSFUSE_OFFLINE")
LEVEL_NOTICE = "Set ray log level from environment variable"  # the C++ core's line about RAY_BACKEND_LOG_LEVEL
NO_CLIENT = ("{} is a Ray Client address, and Ray Data (which runs transfuse's actor pools) does not work through "
             "the Ray Client. Run transfuse on a node of the cluster with --cluster ray:HEAD_HOST:6379, or submit it "
             "as a Ray job, which runs it on the head: ray job submit --address http://HEAD_HOST:8265 -- transfuse "
             "... --cluster ray")


@dataclass(frozen=True)
class Cluster:
    """A parsed ``--cluster`` value and how many actors to run on it (None: one per CPU, or per GPU)."""

    address: str | None  # None: RAY_ADDRESS, a running local cluster, or a new one
    workers: int | None = None

    @classmethod
    def parse(cls, value: str, workers: int | None = None) -> Cluster:
        """``ray`` | ``ray:HOST:PORT`` (ClusterError otherwise, ``ray://`` included).

        >>> Cluster.parse("ray:10.0.0.5:6379").address
        '10.0.0.5:6379'
        """
        if workers is not None and workers < 1:
            raise ClusterError(f"--cluster-workers must be at least 1, got {workers}")
        if value == "ray":
            return cls(None, workers)
        if value.startswith("ray://"):
            raise ClusterError(NO_CLIENT.format(value))
        if value.startswith("ray:") and value.count(":") == 2:
            return cls(value[4:], workers)
        raise ClusterError(f"--cluster takes ray or ray:HOST:PORT (the head's address, from a node of the cluster); "
                           f"got {value!r}")

    def label(self) -> str:
        return self.address or os.environ.get("RAY_ADDRESS") or "local Ray"


def connect(cluster: Cluster):
    """The ``ray`` module, connected to ``cluster`` (once per process)."""
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith("ray://"):
        raise ClusterError(NO_CLIENT.format(f"RAY_ADDRESS={address}"))
    if address and address != "auto" and "RAY_AUTH_MODE" not in os.environ and _token_here():
        os.environ["RAY_AUTH_MODE"] = "token"  # Ray (2.60) sends its token to an explicit address only when told
        # to, and reads this when imported; `auto` finds out by itself
    quiet = log.getEffectiveLevel() > logging.DEBUG
    if quiet:  # Ray's C++ core logs warnings about its own retries to stderr; errors reach us as exceptions
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--cluster needs Ray, which is not installed: {INSTALL}") from None
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        _reachable(address)
    env = {k: os.environ[k] for k in SHARED_ENV if os.environ.get(k)}
    os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")  # under `ray job submit` the job's runtime env holds
    # these variables too (the same values: this process got them from it); without it Ray refuses both
    try:
        with _stderr_without(LEVEL_NOTICE) if quiet else contextlib.nullcontext():
            ray.init(address=cluster.address, runtime_env={"env_vars": env} if env else None,
                     logging_level=logging.ERROR if quiet else logging.INFO, log_to_driver=not quiet,
                     configure_logging=True, include_dashboard=False if address is None else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {cluster.label()}: {str(exc).splitlines()[0]}; start it "
                           f"with `ray start --head` or check the address") from None
    from ray.data import DataContext

    _messages_to_log(quiet)
    for name in ("ray.data", "ray._private", "ray"):
        logging.getLogger(name).setLevel(logging.CRITICAL if quiet else logging.INFO)  # errors come back raised
    context = DataContext.get_current()
    context.enable_progress_bars = False  # transfuse shows one bar over the whole job
    context.print_on_execution_start = False
    log.info("joined %s: %s", cluster.label(), _resources(ray))
    return ray


@contextlib.contextmanager
def _stderr_without(noise: str):
    """While the block runs, file descriptor 2 (where Ray's C++ core writes) goes to a file whose
    lines are then passed on to stderr, except those containing ``noise`` (the C++ core announces
    RAY_BACKEND_LOG_LEVEL once, whatever level it is set to)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True) if noise not in line]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def _messages_to_log(quiet: bool) -> None:
    """Ray's driver prints what the cluster reports (a worker died, a task is retried) to stdout,
    tracebacks and all, where it would corrupt ``--json``; send the first line of each to the log
    instead (the error itself still reaches the caller as an exception)."""
    from ray._private import worker

    if not hasattr(worker, "print_to_stdstream"):  # another Ray version: leave it be
        return

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for message in data.get("lines", []):
            lines = [x for x in str(message).splitlines() if x.strip()]
            if lines:
                log.log(logging.DEBUG if quiet else logging.INFO, "ray (%s): %s", data.get("pid", "?"), lines[0])

    worker.print_to_stdstream = to_log


def _reachable(address: str) -> None:
    """Fail fast when nothing listens at ``address`` (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({getattr(exc, 'strerror', None) or exc}); start "
                           f"one with `ray start --head --port {port or 6379}` or check the address") from None


def _token_here() -> bool:
    """Whether this machine holds a Ray cluster token (``ray start`` writes one since Ray 2.52)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.path.isfile(os.path.expanduser("~/.ray/auth_token")))


def _resources(ray) -> str:
    total = ray.cluster_resources()
    return f"{len(ray.nodes())} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"


def pool(ray, cluster: Cluster, device: str | None) -> tuple[int, dict]:
    """How many actors, and what each asks of Ray: one GPU each on a cluster with GPUs (unless a
    CPU device is asked for), else one CPU each (torch then runs one thread per actor)."""
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    if gpus and not (device or "").startswith("cpu"):
        return cluster.workers or gpus, {"num_gpus": 1, "num_cpus": 1}
    return cluster.workers or max(1, int(total.get("CPU", 1))), {"num_cpus": 1}


def map_on_actors(ray, cluster: Cluster, rows, actor: type, kwargs: dict, device: str | None, per_call: int,
                  what: str):
    """A Ray dataset of ``actor`` (built once per actor with ``kwargs``) mapped over the pyarrow table
    ``rows``: calls of ``per_call`` rows (fewer when the job is small, so every actor gets work), in
    blocks of several calls per actor, and no more actors than blocks."""
    import math

    from ray.data import ActorPoolStrategy

    size, resources = pool(ray, cluster, device)
    n = rows.num_rows
    per_call = max(1, min(per_call, math.ceil(n / size)))
    block = max(per_call, math.ceil(n / (size * 8)))  # several blocks per actor, so all stay busy
    blocks = [rows.slice(i, block) for i in range(0, n, block)]
    size = min(size, len(blocks))  # an actor with no block to work on would only start up
    log.info("%s %d items on %s: %d actors (%s each), %d items per call", what, n, cluster.label(), size,
             ", ".join(f"{v:g} {k.removeprefix('num_')}" for k, v in resources.items()), per_call)
    return ray.data.from_arrow(blocks).map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=per_call,
                                                   batch_format="pyarrow", compute=ActorPoolStrategy(size=size),
                                                   **resources)


def worker_device(ray, device: str | None) -> str:
    """The device the actors run on: the one asked for, else cuda where the cluster has GPUs."""
    if device:
        return device
    return "cuda" if ray.cluster_resources().get("GPU", 0) else "cpu"


_RAISED = re.compile(r"^(?:transfuse\.errors\.(\w+)|(\w*(?:Error|Exception))): (.+)$", re.MULTILINE)


def worker_error(exc: BaseException, cluster: Cluster, what: str) -> Exception:
    """The error a worker raised, out of Ray's wrappers: a transfuse error (missing weights package,
    unreadable input) as itself, a failed import as how to install, anything else as a
    ClusterError naming it. Ray keeps an actor's constructor error only as text, so it is read there."""
    from transfuse import errors

    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = getattr(seen, "cause", None) if isinstance(getattr(seen, "cause", None), BaseException) else \
            (seen.__cause__ or seen.__context__)
    for link in chain:
        if isinstance(link, errors.TransfuseError):
            return link
    raised = [m for link in chain for m in _RAISED.finditer(str(link))]
    for m in reversed(raised):
        kind = getattr(errors, m.group(1) or "", None)
        if isinstance(kind, type) and issubclass(kind, errors.TransfuseError):
            return kind(m.group(3))
    imports = [m for m in raised if m.group(2) in ("ImportError", "ModuleNotFoundError")]
    if imports or any(isinstance(link, ImportError) for link in chain):
        name = imports[-1].group(3) if imports else str(next(x for x in chain if isinstance(x, ImportError)))
        return ClusterError(f"a Ray worker cannot import what {what} needs ({name}): install transfuse and the "
                            f"backbone's weights package on every node ({INSTALL}, plus the package `transfuse "
                            f"backbones` names)")
    last = raised[-1].group(0) if raised else f"{type(chain[-1]).__name__}: {str(chain[-1]).strip()[:300]}"
    return ClusterError(f"{what} on {cluster.label()} failed: {last}")
