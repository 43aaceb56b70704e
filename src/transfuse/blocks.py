"""Block layouts: which columns of a feature matrix came from which layer (or backbone:layer).

Extraction records ``slices_`` per tap; fusion and selection steps take the same layout as
``blocks``, a dict ``{name: [start, stop]}`` (JSON-friendly), or ``None`` for one block.
"""

from __future__ import annotations

from transfuse.errors import DataError

Blocks = dict[str, list[int]]


def layout(blocks: Blocks | None, n_features: int) -> list[tuple[str, slice]]:
    """Validated ``(name, slice)`` pairs covering ``n_features`` columns in order."""
    if not blocks:
        return [("all", slice(0, n_features))]
    pairs = sorted(((name, slice(int(a), int(b))) for name, (a, b) in blocks.items()), key=lambda p: p[1].start)
    pos = 0
    for name, s in pairs:
        if s.start != pos or s.stop <= s.start:
            raise DataError(f"block layout {blocks} does not tile the columns (at {name!r})")
        pos = s.stop
    if pos != n_features:
        raise DataError(f"block layout covers {pos} columns but the features have {n_features}; "
                        f"the blocks must come from the same extraction")
    return pairs


def from_slices(slices: dict[str, slice]) -> Blocks:
    """``FeatureExtractor.slices_`` -> a ``blocks`` parameter."""
    return {name: [s.start, s.stop] for name, s in slices.items()}
