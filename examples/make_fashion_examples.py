"""Write the bundled example data set: the first 30 Fashion-MNIST test images of each class as PNG.

Source: Debian package ``dataset-fashion-mnist`` (Zalando Research, MIT licence).
Run ``python examples/make_fashion_examples.py`` only to regenerate ``examples/fashion``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfuse.data.packaged import FASHION_CLASSES, fashion_mnist, write_pngs


def main(out: Path = Path(__file__).parent / "fashion", per_class: int = 30) -> None:
    images, labels = fashion_mnist("test")
    keep = np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(10)]))
    write_pngs(images[keep], labels[keep], out, FASHION_CLASSES, ids=keep)
    print(f"wrote {len(keep)} images to {out}")


if __name__ == "__main__":
    main()
