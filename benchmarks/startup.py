"""How long a fresh ``transfuse`` process takes for the everyday one-shot commands, before and after a
change, on the same machine in the same run.

Each command runs in a new process (the median of ``--repeats`` runs; the first run of each is
thrown away, so the operating system's file cache is warm for both versions alike):
- ``--help``, ``layers efficientnet_lite0``, ``cache ls``;
- ``predict`` of one image whose features are cached (the head only);
- ``predict`` of one new image (a decoded, never-seen PNG: the backbone runs), per engine
  (``--runtime torch`` eager fp32, ``--runtime onnx``).

The baseline is another git revision (``--baseline``, default the commit before the start-up work),
checked out into ``benchmarks/.work/`` and run with the same interpreter and packages through
``PYTHONPATH``. Also reported: whether the process imported torch (``-X importtime``).

Run: ``python benchmarks/startup.py [--baseline REV] [--repeats 5]``; writes
benchmarks/results/startup.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import WORK, markdown_table, save_results

REPO = Path(__file__).resolve().parents[1]
BASELINE = "e9a3576"  # main before the start-up work (issue 17)
CODE = "import sys; from transfuse.cli import main; sys.argv = ['transfuse'] + sys.argv[1:]; main()"


def _checkout(rev: str) -> Path:
    where = WORK / f"startup-{rev}"
    if not (where / "src" / "transfuse").is_dir():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev, "src"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where / "src"


def _run(src: Path, args: list[str], env: dict) -> tuple[float, bool]:
    """Wall seconds of one process, and whether it imported torch."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", CODE, *args], capture_output=True, text=True,
                       env={**env, "PYTHONPATH": str(src)}, cwd=REPO)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stderr[-800:]}")
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    return seconds, "torch" in imported


def _new_image(i: int) -> str:
    """A PNG no cache has seen (random pixels, one per call)."""
    from PIL import Image

    path = WORK / "startup-images" / f"new-{os.getpid()}-{i}-{time.time_ns()}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(i + time.time_ns() % 1000).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFUSE_CACHE": str(WORK / "startup-cache")}
    versions = {"before": _checkout(args.baseline), "after": REPO / "src"}
    model = WORK / "startup-model"
    example = str(REPO / "examples" / "fashion" / "bag" / "00018.png")
    subprocess.run([sys.executable, "-c", CODE, "-q", "fit", str(REPO / "examples" / "fashion"), "--out", str(model),
                    "--force", "--precision", "fp32"], env={**env, "PYTHONPATH": str(REPO / "src")}, check=True)
    commands = {
        "--help": lambda i: ["--help"],
        "layers efficientnet_lite0": lambda i: ["layers", "efficientnet_lite0"],
        "cache ls": lambda i: ["cache", "ls"],
        "predict, features cached": lambda i: ["-q", "predict", str(model), example],
        "predict one new image, torch fp32": lambda i: ["-q", "predict", str(model), _new_image(i), "--runtime", "torch",
                                                        "--precision", "fp32"],
        "predict one new image, onnx fp32": lambda i: ["-q", "predict", str(model), _new_image(i), "--runtime", "onnx"],
    }
    rows, data = [], []
    for name, make in commands.items():
        row = {"command": name}
        for version, src in versions.items():
            times, torch_seen = [], False
            for i in range(args.repeats + 1):
                seconds, torch_seen = _run(src, make(i), env)
                times.append(seconds)
            row[version] = statistics.median(times[1:])
            row[f"{version}_torch"] = torch_seen
        data.append(row)
        print(f"{name}: before {row['before']:.2f}s, after {row['after']:.2f}s", flush=True)
        rows.append([name, f"{row['before']:.2f}", f"{row['after']:.2f}", f"{row['before'] / row['after']:.1f}x",
                     "yes" if row["before_torch"] else "no", "yes" if row["after_torch"] else "no"])
    table = markdown_table(["command (new process)", "before (s)", "after (s)", "faster", "torch before",
                            "torch after"], rows)
    save_results("startup", table, {"rows": data, "baseline": args.baseline, "repeats": args.repeats})


if __name__ == "__main__":
    main()
