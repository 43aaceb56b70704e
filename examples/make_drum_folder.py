"""Copy the labelled Hydrogen drum hits into a class-folder tree that `transfuse fit` reads.

Needs the kits: ``./scripts/install-data.sh audio``. Run
``python examples/make_drum_folder.py drums`` to write ``drums/<kick|snare|...>/<kit>-<file>``.
Kit licences (GPL or CC, per kit) stay with the copies; see the kits' own folders.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from transfuse.data.packaged import drum_hits


def main(out: Path) -> None:
    hits = drum_hits()
    for path, label, kit in zip(hits["path"], hits["label"], hits["kit"]):
        target = out / label / f"{kit.replace(' ', '_')}-{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy(path, target)
    print(f"wrote {len(hits['path'])} hits in {len(set(hits['label']))} classes to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "drums"))
