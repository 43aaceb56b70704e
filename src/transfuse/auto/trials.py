"""The decision path of ``transfuse auto``: every trial with its score and time, every stage with
what it decided, and one progress line (what is being tried, the best so far, time against the
budget) that refreshes on its own while long work runs."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time

from tqdm.auto import tqdm

from transfuse.auto.budget import Budget

log = logging.getLogger("transfuse.auto")


class TrialLog:
    """Collects trials (``record``) and stage notes (``note``) under stages (``stage``); ``best`` is the
    trial with the highest score so far (ties: the earlier one)."""

    def __init__(self, budget: Budget, metric: str, show: bool | None = None) -> None:
        self.budget, self.metric = budget, metric
        self.trials: list[dict] = []
        self.stages: list[dict] = []
        self.best: dict | None = None
        self._doing = "starting"
        if show is None:  # a live line on a terminal; in a log file, the log's own lines say the same
            show = log.getEffectiveLevel() <= logging.INFO and sys.stderr.isatty()
        self._bar = None
        if show:
            total = budget.seconds if budget.seconds is not None else budget.trials
            self._bar = tqdm(total=round(total) if total else None, unit="s" if budget.seconds else "trial",
                             desc="auto", leave=True, file=sys.stderr, dynamic_ncols=True,
                             bar_format="auto {n_fmt}/{total_fmt}{unit} |{bar:12}| {desc}")
            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    # -- stages and trials --------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str):
        entry = {"stage": name, "seconds": 0.0, "trials": 0, "notes": []}
        self.stages.append(entry)
        start, before = time.perf_counter(), len(self.trials)
        self.doing(name)
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - start, 1)
            entry["trials"] = len(self.trials) - before + entry.pop("extra", 0)  # runs that are trials too

    def note(self, text: str) -> None:
        """Something this stage decided, and why (logged, and kept in the decision path)."""
        log.info("%s", text)
        if self.stages:
            self.stages[-1]["notes"].append(text)

    def doing(self, what: str) -> None:
        self._doing = what
        self._refresh()

    def record(self, candidate: str, score: float, std: float, seconds: float, **detail) -> dict:
        row = {"stage": self.stages[-1]["stage"] if self.stages else None, "candidate": candidate,
               "cv_score": round(float(score), 4), "cv_std": round(float(std), 4), "seconds": round(seconds, 2),
               "at": round(self.budget.elapsed(), 1), **detail}
        self.trials.append(row)
        self.budget.spend()
        if self.best is None or row["cv_score"] > self.best["cv_score"]:
            self.best = row
            log.info("best so far (%.0fs): %s, %.3f", row["at"], candidate, score)
        else:
            log.debug("trial %s: %.4f", candidate, score)
        self._refresh()
        return row

    def close(self) -> None:
        if self._bar is not None:
            self._stop.set()
            self._refresh()
            self._bar.close()
            self._bar = None

    # -- the progress line --------------------------------------------------------------------------
    def _refresh(self) -> None:
        bar = self._bar
        if bar is None:
            return
        best = f"best {self.best['cv_score']:.3f} ({_short(self.best['candidate'])})" if self.best else "no trial yet"
        bar.n = round(self.budget.elapsed()) if self.budget.seconds is not None else self.budget.used_trials
        bar.set_description_str(f"{_short(self._doing, 48)} | {best}", refresh=False)
        bar.refresh()

    def _tick(self) -> None:
        while not self._stop.wait(2.0):
            with contextlib.suppress(Exception):  # a closed stream must not kill the run
                self._refresh()


def _short(text: str, width: int = 40) -> str:
    """Long names abbreviated in the middle, so both ends stay readable."""
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width // 2 - 1):]
