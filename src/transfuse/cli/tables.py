"""Tables that fit a terminal of 80 columns: long names are shortened in the middle, where a path's
folder repeats, so its start and its file name both stay readable."""

from __future__ import annotations


def middle(text: str, width: int) -> str:
    """``text`` at most ``width`` characters, with the middle replaced by an ellipsis.

    >>> middle("examples/fashion/ankle_boot/00018.png", 24)
    'examples…_boot/00018.png'
    >>> middle("short.png", 24)
    'short.png'
    """
    if len(text) <= width or width < 5:
        return text
    tail = (2 * (width - 1)) // 3  # the end of a path (its file name) says more than its start
    head = width - 1 - tail
    return f"{text[:head]}…{text[-tail:]}"
