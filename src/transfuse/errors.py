"""Exceptions raised for user-facing problems.

Each subclasses a builtin so callers can catch the usual type; all share
:class:`TransfuseError` so the CLI can turn them into one-line messages.
Messages say what was passed, what is allowed, and what to do.
"""

from __future__ import annotations


class TransfuseError(Exception):
    """Base class of every error transfuse raises on purpose."""


class DataError(TransfuseError, ValueError):
    """The input data cannot be used as given (empty class, bad manifest, ...)."""


class CorruptInputError(DataError):
    """One or more input files could not be decoded."""

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = list(paths or [])

    @classmethod
    def unreadable(cls, bad_paths: list[str], total: int, what: str = "images",
                   cached: bool = True) -> CorruptInputError:
        """The one message for inputs that could not be decoded (``cached``: the others' features were
        kept, as extraction does)."""
        listing = ", ".join(bad_paths[:5]) + (" ..." if len(bad_paths) > 5 else "")
        kept = "; features of the others are cached" if cached else ""
        return cls(f"{len(bad_paths)} of {total} files could not be read as {what}: {listing}; fix or remove them, "
                   f"or pass --skip-bad (on_error='skip' in Python) to leave them out{kept}", bad_paths)


class UnknownBackboneError(TransfuseError, KeyError):
    """A backbone name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(TransfuseError, KeyError):
    """A tap (layer) name that the backbone does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(TransfuseError, OSError):
    """Pretrained weights could not be found or downloaded."""


class ModelDirError(TransfuseError, OSError):
    """A saved model directory is missing, broken or from a newer transfuse."""


class CacheError(TransfuseError, OSError):
    """The feature cache cannot be used (unwritable, corrupt catalogue, ...)."""


class EngineError(DataError):
    """An extraction engine asked for (ONNX export, compiled package) could not be built or run."""


class OutOfTime(TransfuseError):
    """Work stopped at a deadline it was given (what was computed before it is kept)."""


class ClusterError(TransfuseError, RuntimeError):
    """A Ray cluster could not be reached or used (not installed, no answer, a worker failed)."""
