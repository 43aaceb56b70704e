"""Recipes: what sits between the extracted features and the head, as one small config.

A :class:`Recipe` names the layers, fusion, selection and head; ``build`` turns it into
sklearn steps for a given block layout. ``fit``, ``search`` and the benchmarks all use it,
so a configuration found by search is exactly the one that gets saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from transfuse.blocks import Blocks
from transfuse.fusion import make_fusion
from transfuse.heads import make_head
from transfuse.selection import parse_select


@dataclass(frozen=True)
class Recipe:
    """``layers`` (block names to use, None = all), ``fusion`` (None, concat, weighted, scalar-mix, mlp),
    ``select`` (e.g. ``"group-lasso:2,pca:0.95"``), ``head`` and its parameters."""

    layers: tuple[str, ...] | None = None
    fusion: str | None = None
    select: str | None = None
    head: str = "logreg"
    head_params: dict = field(default_factory=dict)

    def label(self) -> str:
        """Short human-readable name, e.g. ``blocks.4+features | concat | pca:0.95 | logreg C=1``, or
        ``logreg head`` for a plain probe."""
        hp = " ".join(f"{k}={v}" for k, v in sorted(self.head_params.items()))
        if not (self.layers or self.fusion or self.select):  # a plain probe on every extracted column
            return f"{self.head} head {hp}".strip()
        parts = ["+".join(self.layers) if self.layers else "all layers", self.fusion or "-",
                 self.select or "-", f"{self.head} {hp}".strip()]
        return " | ".join(parts)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "layers": tuple(d["layers"]) if d.get("layers") else None})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers else None
        return d

    def validate(self) -> None:
        """Raise a clear error for an unknown fusion, selection or head (before any extraction)."""
        parse_select(self.select)
        if self.fusion is not None:
            make_fusion(self.fusion, None)
        make_head(self.head, **self.head_params)

    def build(self, blocks: Blocks) -> list[tuple[str, object]]:
        """sklearn steps (fusion, selections, head) for features laid out as ``blocks``.

        Blocks not in ``layers`` are dropped by the fusion step, so a recipe can run on a
        matrix holding more layers than it uses (as search does).
        """
        budget, selectors = parse_select(self.select)
        use = list(self.layers) if self.layers else None
        steps: list[tuple[str, object]] = []
        if self.fusion or budget or len(blocks) > 1:
            steps.append(("fusion", make_fusion(self.fusion or "concat", blocks, use=use, select_blocks=budget)))
        steps += [(f"select{i}", s) for i, s in enumerate(selectors)]
        head = make_head(self.head, **self.head_params)
        if steps and steps[-1][1].kind == "concat" and "standardize" not in self.head_params:
            head.set_params(standardize=False)  # re-standardising would undo the block balance
        steps.append(("head", head))
        return steps
