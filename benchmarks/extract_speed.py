"""Extraction speed: transfuse vs the naive way, cache hits, and memory as the data grows.

The naive way: decode one image at a time and run one full forward pass per requested
layer (a hook on that layer). transfuse: batched, decoding in worker processes, all taps
from ONE forward pass, channels_last, streamed into the feature cache.

Run: ``python benchmarks/extract_speed.py [--n 512] [--memory 1000,10000]``
Writes benchmarks/results/extract_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

import torch

from common import WORK, fashion_pngs, markdown_table, save_results
from transfuse.backbones import create_backbone
from transfuse.data.images import decode_image
from transfuse.extract import extract_features
from transfuse.taps import pool

BACKBONE = "efficientnet_lite0"
TAPS = ["blocks.2", "blocks.4", "features"]


@torch.inference_mode()
def naive(paths: list[str]) -> float:
    """One image at a time, one full forward pass per layer; returns seconds."""
    bb = create_backbone(BACKBONE)
    modules = dict(bb.model.named_modules())
    transform = bb.input_spec.transform()
    start = time.perf_counter()
    for p in paths:
        x = transform(decode_image(p)).unsqueeze(0)
        for tap in TAPS:
            captured = {}
            if tap == "features":
                captured["out"] = bb.model.forward_features(x)
            else:
                h = modules[tap].register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
                bb.model(x)
                h.remove()
            pool(captured["out"], "avg").numpy()
    return time.perf_counter() - start


def transfuse_run(paths: list[str], cache) -> tuple[float, int]:
    start = time.perf_counter()
    feats = extract_features(paths, backbone=BACKBONE, layers=TAPS, cache=cache, progress=False)
    return time.perf_counter() - start, feats.n_extracted


MEMORY_CHILD = """
import json, resource, sys, time
from transfuse.extract import extract_features
paths = json.load(open(sys.argv[1]))
t = time.perf_counter()
f = extract_features(paths, backbone=%r, layers=%r, cache=sys.argv[2], progress=False)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t, "output_mb": f.X.nbytes / 1e6}))
""" % (BACKBONE, TAPS)


def peak_memory(n: int) -> dict:
    """Peak RSS of a fresh process extracting ``n`` images into an empty cache."""
    paths, _, _ = fashion_pngs("train", n // 10, seed=1)
    listing = WORK / f"paths-{n}.json"
    listing.write_text(json.dumps(paths))
    cache = WORK / f"cache-mem-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(listing), str(cache)],
                         capture_output=True, text=True, check=True)
    shutil.rmtree(cache, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--memory", default="1000,10000", help="sizes for the peak-memory runs ('' to skip)")
    args = parser.parse_args()
    paths, _, _ = fashion_pngs("train", -(-args.n // 10), seed=0)
    paths = paths[: args.n]
    create_backbone(BACKBONE)  # warm the file cache for weights

    cache = WORK / "cache-speed"
    shutil.rmtree(cache, ignore_errors=True)
    t_naive = naive(paths)
    t_cold, n_cold = transfuse_run(paths, str(cache))
    t_hit, n_hit = transfuse_run(paths, str(cache))
    t_nocache, _ = transfuse_run(paths, False)
    n = len(paths)
    rows = [
        ["naive: 1 image at a time, 1 forward pass per layer", f"{n / t_naive:.1f}", "1.0x", n],
        ["transfuse, no cache", f"{n / t_nocache:.1f}", f"{t_naive / t_nocache:.1f}x", n],
        ["transfuse, cold cache (extract + write)", f"{n / t_cold:.1f}", f"{t_naive / t_cold:.1f}x", n_cold],
        ["transfuse, cache hit (re-run)", f"{n / t_hit:.0f}", f"{t_naive / t_hit:.0f}x "
         f"({t_cold / t_hit:.0f}x over cold)", n_hit],
    ]
    table = markdown_table(["run", "images/s", "speed-up vs naive", "images extracted"], rows)
    table = (f"{BACKBONE}, {n} Fashion-MNIST PNGs from disk, taps {', '.join(TAPS)}, avg pooling, "
             f"{torch.get_num_threads()} threads\n\n" + table)
    mem = {}
    sizes = [int(s) for s in args.memory.split(",") if s]
    if sizes:
        for size in sizes:
            mem[size] = peak_memory(size)
        mem_rows = [[size, f"{m['rss_mb']:.0f}", f"{m['output_mb']:.1f}", f"{size / m['seconds']:.1f}"]
                    for size, m in mem.items()]
        table += "\n\nPeak memory of a fresh process extracting into an empty cache:\n\n" + markdown_table(
            ["images", "peak RSS (MB)", "feature matrix (MB)", "images/s"], mem_rows)
    save_results("extract_speed", table, {"n": n, "taps": TAPS, "naive_s": t_naive, "cold_s": t_cold,
                                          "hit_s": t_hit, "nocache_s": t_nocache, "memory": mem})


if __name__ == "__main__":
    main()
