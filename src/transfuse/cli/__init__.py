"""The ``transfuse`` command: thin commands over the Python API.

``app.py`` holds the application, ``options.py`` the flags and the groups commands share;
``train.py`` (fit, search, finetune, compare), ``auto.py`` (auto), ``use.py`` (predict, evaluate) and ``inspect.py``
(layers, backbones, cache, weights) the commands.

Exit codes: 0 success, 2 bad usage or bad input (one-line message), 1 unexpected failure.
"""

from __future__ import annotations

import sys

import typer

from transfuse.cli import auto, inspect, train, use  # noqa: F401  (the commands register themselves on the app)
from transfuse.cli.app import app, err, log
from transfuse.errors import TransfuseError

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point with the exit-code contract."""
    try:
        rc = app(standalone_mode=False)  # typer returns (not raises) the code of Ctrl-C and Exit
        if rc == 130:
            err.print("interrupted; cached features are kept, run the command again to resume")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (TransfuseError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted; cached features are kept, run the command again to resume")
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors: one line
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"error: {exc.format_message()}{where}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        log.debug("unexpected failure", exc_info=True)
        err.print(f"unexpected error: {type(exc).__name__}: {exc} (run with -vv for the traceback)",
                  markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
