"""Progress of long work: a live bar on a terminal, a few plain lines in a log file.

tqdm redraws its bar with carriage returns, which turn a log file into one very long line of
frames. When stderr is not a terminal, :func:`progress` returns a reporter that logs one line at
most every ``LOG_EVERY`` seconds (and one at the end of long work) instead.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("transfuse.progress")
LOG_EVERY = 10.0  # seconds between two progress lines in a log file


def progress(total: int | None, desc: str, unit: str = "it", show: bool | None = None):
    """A context manager with ``update(n)``: tqdm on a terminal, log lines otherwise, nothing when
    ``show`` is False (None: shown when the log level is INFO or lower)."""
    if show is None:
        show = logging.getLogger("transfuse").getEffectiveLevel() <= logging.INFO
    if show and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return LogProgress(total, desc, unit, show)


class LogProgress:
    """``desc: done/total unit (rate/s)`` as a log line, at most every ``every`` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str, show: bool = True, every: float = LOG_EVERY) -> None:
        self.total, self.desc, self.unit, self.show, self.every = total, desc, unit, show, every
        self.n = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.show and now - self._last >= self.every:
            self._last = now
            self._line(now)

    def close(self) -> None:
        """The last line, when the work was long enough to have logged others (short work is summed
        up by its caller's own log line)."""
        if self.show and self._last != self._start:
            self._line(time.monotonic())
        self.show = False

    def _line(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        log.info("%s: %d%s %s (%.1f/s, %.0fs)", self.desc, self.n, of, self.unit, self.n / elapsed, elapsed)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
