"""The ``transfuse`` Typer application, its consoles and its global flags (-v, -q)."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Transfer learning from pretrained networks: extract, probe, fine-tune, evaluate, predict.")
cache_app = typer.Typer(no_args_is_help=True, help="Show and clean the feature cache (and the engine files beside it).")
app.add_typer(cache_app, name="cache")
weights_app = typer.Typer(no_args_is_help=True, help="Fetch weights that come in packages transfuse does not install.")
app.add_typer(weights_app, name="weights")
out = Console()
err = Console(stderr=True)
log = logging.getLogger("transfuse")


def report_line(run_dir) -> None:
    """Where a run's report is, when one was written (open it in any browser)."""
    from pathlib import Path

    from transfuse.report import REPORT

    if run_dir is not None and (Path(run_dir) / REPORT).is_file():
        out.print(f"report: {Path(run_dir) / REPORT} (open it in a browser)")


def _version(show: bool) -> None:
    if show:
        from transfuse import __version__

        print(f"transfuse {__version__}")
        raise typer.Exit()


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv: debug).")] = 0,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    if verbose == 0:
        for noisy in ("timm", "PIL", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # one log line, not the library's source line under it; -q: none, even from filters a library
    # adds when it is imported later (Lightning turns its deprecations back on)
    warnings.showwarning = _drop_warning if quiet else _log_warning


def _drop_warning(*args, **kwargs) -> None:
    return None


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    where = filename.rsplit("site-packages/", 1)[-1]
    logging.getLogger("transfuse.warnings").warning("%s: %s (%s:%d)", category.__name__, message, where, lineno)
