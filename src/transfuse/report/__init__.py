"""``report.html``: one self-contained page per run (or several runs side by side), built only from
the files a run saved, so it can be rebuilt at any time and a run that stopped halfway still gets
one for what exists.

- :mod:`~transfuse.report.runfiles` reads a run directory (config, metrics, predictions, the 2-D
  map, search and auto tables);
- :mod:`~transfuse.report.stats` turns predictions into intervals, calibration and mistakes;
- :mod:`~transfuse.report.figures` draws them (matplotlib, inline PNG);
- :mod:`~transfuse.report.media` makes thumbnails, text snippets and audio players for items;
- :mod:`~transfuse.report.page` lays out the HTML (no scripts, no network);
- :func:`write_report` writes the page and each figure's data beside it (``report_files/``).
"""

from __future__ import annotations

import logging
from pathlib import Path

REPORT = "report.html"
DATA_DIR = "report_files"
log = logging.getLogger(__name__)


def write_report(run_dirs: list[str | Path] | str | Path, out: str | Path | None = None) -> Path:
    """Build the report of one run directory (``DIR/report.html`` by default) or of several side by
    side (``report.html`` in the working directory by default); returns its path.

    >>> write_report("transfuse-models/demo")  # doctest: +SKIP
    PosixPath('transfuse-models/demo/report.html')
    """
    from transfuse.atomic import atomic_write_text
    from transfuse.report.page import render
    from transfuse.report.runfiles import read_run

    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    runs = [read_run(d) for d in dirs]
    out = Path(out) if out is not None else dirs[0] / REPORT if len(dirs) == 1 else Path(REPORT)
    data_dir = out.parent / DATA_DIR
    html = render(runs, data_dir)
    atomic_write_text(out, html)
    return out


def try_report(run_dir: Path) -> Path | None:
    """:func:`write_report` for a run just saved; a failure is logged, never raised (a report must not
    lose a trained model)."""
    try:
        return write_report(run_dir)
    except Exception as exc:  # noqa: BLE001  (any failure: the model is saved; say how to rebuild)
        log.warning("the report could not be written (%s: %s); rebuild it with: transfuse report %s",
                    type(exc).__name__, exc, run_dir)
        return None
