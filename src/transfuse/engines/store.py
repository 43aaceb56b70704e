"""The files engines keep beside the feature cache, owned by one object.

Under the cache root::

    runtime_checks.json       remembered calibrations (agreement of each engine with eager fp32)
    onnx/<check>.onnx         exported tap networks, one per backbone, tap set and device kind
    compiled/<package>.pt2    torch.compile packages, one per backbone, precision and machine

Without a cache folder, graphs and packages go to a scratch folder private to the process and
calibrations are remembered in memory until it ends.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from pathlib import Path

from transfuse.atomic import atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

CHECKS_FILE = "runtime_checks.json"
ORPHAN_GRACE_S = 3600.0  # a half-written file newer than this may belong to a build still running
_UNSAVED: dict[str, dict] = {}  # checks made without a cache folder, for the rest of the process


class EngineStore:
    """Calibrations, exported graphs and compiled packages of one cache root (or of none).

    >>> EngineStore(None).artifact_path(("torch", "bf16"), "check", "package") is None
    True
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    # -- remembered calibrations --------------------------------------------------------------
    def checks(self) -> dict:
        """Every remembered calibration, by check key."""
        if self.root is None:
            return _UNSAVED
        try:
            return json.loads((self.root / CHECKS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def save_check(self, key: str, record: dict) -> None:
        """Add one calibration (read, merge and replace under a lock, so processes calibrating at once
        keep each other's records); a read-only cache just calibrates again next time."""
        if self.root is None:
            _UNSAVED[key] = record
            return
        try:
            with exclusive_lock(self.root / f"{CHECKS_FILE}.lock"):
                checks = self.checks()
                checks[key] = {**checks.get(key, {}), **record}  # another process's engines for this key stay
                atomic_write_text(self.root / CHECKS_FILE, json.dumps(checks, indent=1) + "\n")
        except OSError as exc:
            log.debug("cannot remember the runtime check: %s", exc)

    # -- built engines --------------------------------------------------------------------------
    def artifact_path(self, candidate: tuple[str, str], check: str, package: str, create: bool = True) -> Path | None:
        """Where a candidate's built engine lives: ONNX graphs per tap set (``onnx/<check>.onnx``),
        compiled packages per backbone and precision with every tap (``compiled/<package>-<precision>.pt2``);
        None for eager engines, and with ``create=False`` when there is no scratch folder yet."""
        runtime, precision = candidate
        if runtime not in ("onnx", "compile"):
            return None
        if self.root is None and not create and not _scratch_dir.cache_info().currsize:
            return None  # no private folder yet, so nothing built in it
        folder = Path(_scratch_dir()) if self.root is None else self.root / ("onnx" if runtime == "onnx" else "compiled")
        return folder / (f"{check}.onnx" if runtime == "onnx" else f"{package}-{precision}.pt2")

    def has_package(self, package: str, precision: str) -> bool:
        """Whether the compiled package ``package`` is already built in ``precision``."""
        path = self.artifact_path(("compile", precision), "", package, create=False)
        return path is not None and path.is_file()

    def files(self) -> list[Path]:
        """Exported ONNX graphs and compiled packages (not those being built)."""
        if self.root is None:
            return []
        packages = [p for p in (self.root / "compiled").glob("*.pt2") if ".partial." not in p.name]
        return sorted([*(self.root / "onnx").glob("*.onnx"), *packages])

    def prune(self, everything: bool = False, older_than_days: float | None = None) -> dict[str, int]:
        """Remove half-written graphs and packages of killed builds (always); with ``everything`` every
        graph, package, calibration and build lock; with ``older_than_days`` the graphs and packages
        unused that long (loading one marks it used). Returns counts of files and bytes removed."""
        if self.root is None:
            return {"files": 0, "bytes": 0}
        now = time.time()

        def age(path: Path) -> float:
            try:
                return now - path.stat().st_mtime
            except OSError:  # gone meanwhile
                return 0.0

        doomed = [p for p in [*(self.root / "compiled").glob("*.partial.pt2"), *(self.root / "onnx").glob("*.tmp")]
                  if age(p) > ORPHAN_GRACE_S]
        if everything:  # a lock removed mid-build costs a second build at most
            doomed += [*self.files(), self.root / CHECKS_FILE, *(self.root / "compiled").glob("*.lock")]
        elif older_than_days is not None:
            doomed += [p for p in self.files() if age(p) > older_than_days * 86400]
        removed = {"files": 0, "bytes": 0}
        for path in doomed:
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            removed["files"] += 1
            removed["bytes"] += size
        return removed


@functools.lru_cache(maxsize=1)
def _scratch_dir() -> str:
    """Where exported graphs and compiled packages go without a cache folder: private to this
    process, removed when it ends."""
    import atexit
    import shutil

    folder = tempfile.mkdtemp(prefix="transfuse-engines-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
