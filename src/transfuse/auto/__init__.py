"""``transfuse auto``: the best model for the data within a budget (see :mod:`transfuse.auto.run`).

Only the budget is imported eagerly (the CLI checks ``--budget`` with it before anything heavy loads).
"""

from transfuse.auto.budget import Budget, parse_budget

__all__ = ["AutoRequest", "AutoResult", "Budget", "parse_budget", "run_auto"]


def __getattr__(name: str):
    if name in ("AutoRequest", "AutoResult", "run_auto"):
        from transfuse.auto import run

        return getattr(run, name)
    raise AttributeError(f"module 'transfuse.auto' has no attribute {name!r}")
