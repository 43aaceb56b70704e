"""What ``transfuse auto`` may spend: wall-clock time on this machine, or a number of trials."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass, field

from transfuse.errors import DataError

_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?$")
_TRIALS = re.compile(r"^(\d+)\s*(?:t|trials?)$")


@dataclass
class Budget:
    """A wall-clock limit in ``seconds`` (counted from :meth:`restart`), or a number of ``trials``
    (each cross-validated candidate and each fine-tuning run is one), or both; None means no limit."""

    seconds: float | None = None
    trials: int | None = None
    used_trials: int = 0
    started: float = field(default_factory=time.perf_counter)

    def restart(self) -> Budget:
        self.started, self.used_trials = time.perf_counter(), 0
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left (infinite without a time limit)."""
        return math.inf if self.seconds is None else max(0.0, self.seconds - self.elapsed())

    def trials_left(self) -> float:
        return math.inf if self.trials is None else max(0, self.trials - self.used_trials)

    def allows(self, seconds: float = 0.0, trials: int = 1) -> bool:
        """Whether work estimated at ``seconds`` and ``trials`` still fits."""
        return seconds <= self.left() and trials <= self.trials_left()

    def spend(self, trials: int = 1) -> None:
        self.used_trials += trials

    def describe(self) -> str:
        parts = ([f"{_clock(self.seconds)}"] if self.seconds is not None else []) + \
            ([f"{self.trials} trials"] if self.trials is not None else [])
        return " and ".join(parts) or "no limit"

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "trials": self.trials, "used_seconds": round(self.elapsed(), 1),
                "used_trials": self.used_trials}


def parse_budget(text: str | float | int | Budget | None) -> Budget:
    """``"15m"``, ``"90s"``, ``"1h30m"``, ``"600"`` (seconds) -> a time budget; ``"40 trials"`` (or
    ``"40t"``) -> a trial budget; ``"15m,40t"`` -> both.

    >>> parse_budget("1h30m").seconds, parse_budget("40 trials").trials
    (5400.0, 40)
    """
    if isinstance(text, Budget):
        return dataclasses.replace(text)  # a run restarts its own copy
    if text is None:
        return Budget()
    if isinstance(text, (int, float)):
        return _checked(Budget(seconds=float(text)), str(text))
    budget = Budget()
    for part in (p.strip().lower() for p in str(text).split(",")):
        if (m := _TRIALS.match(part)) is not None:
            budget.trials = int(m.group(1))
        elif re.fullmatch(r"\d+(?:\.\d+)?", part):
            budget.seconds = float(part)
        elif part and (m := _DURATION.match(part.replace(" ", ""))) is not None and any(m.groups()):
            budget.seconds = sum(float(v) * _UNITS[u] for v, u in zip(m.groups(), "hms") if v)
        else:
            raise DataError(f"cannot read the budget {text!r}: give a duration (90s, 15m, 1h30m, or seconds), a number "
                            f"of trials (40 trials), or both (15m,40t)")
    return _checked(budget, str(text))


def _checked(budget: Budget, text: str) -> Budget:
    if (budget.seconds is not None and budget.seconds <= 0) or (budget.trials is not None and budget.trials < 1):
        raise DataError(f"the budget must be above zero, got {text!r}")
    return budget


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
