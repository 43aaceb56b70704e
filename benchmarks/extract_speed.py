"""Extraction speed: transfuse vs the naive way, cache hits, and memory as the data grows.

The naive way: decode one image at a time and run one full forward pass per requested
layer (a hook on that layer). transfuse: batched, decoding in worker processes, all taps
from ONE forward pass, channels_last, streamed into the feature cache.

Then, per backbone (efficientnet_lite0, minilm_l6, sound_effects), every runtime and precision
side by side: pure-model speed, end-to-end speed from disk, agreement with eager fp32 and the
accuracy of a linear probe on the features.

Run: ``python benchmarks/extract_speed.py [--n 512] [--memory 1000,10000] [--only-runtimes]``
Writes benchmarks/results/extract_speed.{md,json} and extract_runtimes.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from transfuse.backbones import create_backbone, get_spec
from transfuse.data.images import decode_image
from transfuse.data.packaged import clothing_reviews, drum_hits
from transfuse.engines import worst_cosine
from transfuse.extract import extract_features
from transfuse.taps import check_pooling, pool

from common import WORK, fashion_pngs, markdown_table, save_results

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
f = extract_features(paths, backbone=BACKBONE, layers=TAPS, cache=sys.argv[2], progress=False)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t, "output_mb": f.X.nbytes / 1e6}))
""".replace("BACKBONE", repr(BACKBONE)).replace("TAPS", repr(TAPS))


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


# --- runtimes and precisions ---------------------------------------------------------------------

# auto twice: on a machine where nothing is compiled yet (a small job: it does not compile), then once the
# compile rows have built the package (auto uses it from then on)
ENGINES = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("auto", "auto"), ("compile", "fp32"),
           ("compile", "bf16"), ("auto", "auto")]
RUNTIME_TAPS = {"efficientnet_lite0": TAPS, "dinov2_vits14": ["blocks.3", "blocks.7", "features"],
                "minilm_l6": ["layer.3", "layer.5", "features"], "sound_effects": ["block2", "block3", "features"]}


def runtime_data(backbone: str, n: int) -> tuple[list[str], np.ndarray]:
    """Items and labels: Fashion-MNIST PNGs, clothing reviews (department), drum hits from disk."""
    if get_spec(backbone).modality == "image":
        paths, labels, _ = fashion_pngs("train", -(-n // 10), seed=0)
        return paths[:n], np.asarray(labels[:n])
    if backbone == "minilm_l6":
        data = clothing_reviews()
        idx = np.sort(np.random.default_rng(0).permutation(len(data["text"]))[:n])
        return [data["text"][i] for i in idx], np.asarray(data["department"])[idx]
    data = drum_hits()
    return data["path"][:n], np.asarray(data["label"][:n])


def pure_model(backbone: str, items: list[str], taps: list[str], engines: list[tuple[str, str]],
               rounds: int = 3, max_batches: int = 40) -> tuple[dict, dict]:
    """Items per second of the forward pass alone (inputs decoded beforehand, in memory), per engine,
    and the seconds each ONNX export or compile took."""
    from transfuse.engines import Calibration, EngineStore, Plan, autocast, runner
    from transfuse.extract import FORMAT, get_backbone

    spec = get_spec(backbone)
    bb = get_backbone(backbone, "pretrained", spec.weights.id, "cpu")
    batches = [(inputs, [j for j in range(len(ok)) if ok[j]]) for inputs, _, ok in
               bb.batches(items, bb.default_batch_size("cpu"), 0, "cpu")]
    if spec.modality == "image":  # one decoded batch again and again, like the table (a list of
        batches = [batches[len(batches) // 2]] * max_batches  # 250 decoded batches ran slower than decoding)
    else:  # spread over the lengths (texts and clips are batched by length)
        batches = batches[:: max(1, len(batches) // max_batches)]
    pooling = check_pooling(None, spec.modality)
    runners, built = {}, {}
    for rt, pr in engines:
        if rt in ("onnx", "compile"):  # exported or compiled once (without a cache: a per-process folder)
            t = time.perf_counter()
            calibration = Calibration(store=EngineStore(None), backbone=lambda: bb, name=backbone,
                                      weights_id=spec.weights.id, items=items, taps=taps, pooling=pooling,
                                      preprocess=f"{spec.input_spec.identity()}|{FORMAT}", device="cpu")
            found = calibration([(rt, pr)])
            if found.get((rt, pr), (None,))[0] is None:  # the export or compile failed: no pure-model row
                continue
            plan = Plan(rt, pr, found[(rt, pr)][0], found[(rt, pr)][1])
            runners[(rt, pr)] = {"runner": runner(plan, taps, bb.tap_names, "cpu")}
            built[f"{rt} {pr}"] = time.perf_counter() - t
        elif rt != "auto":
            runners[(rt, pr)] = {}
    speeds: dict[str, list[float]] = {}
    for _ in range(rounds):  # engines interleaved, median of the rounds: this machine's speed drifts
        for (rt, pr), kwargs in runners.items():
            with autocast("cpu", pr):
                bb.embed(batches[0][0], batches[0][1], taps, pooling, "cpu", **kwargs)
                t = time.perf_counter()
                for inputs, good in batches:
                    bb.embed(inputs, good, taps, pooling, "cpu", **kwargs)
            speeds.setdefault(f"{rt} {pr}", []).append(sum(len(g) for _, g in batches) / (time.perf_counter() - t))
    return {k: float(np.median(v)) for k, v in speeds.items()}, built


def probe_accuracy(X: np.ndarray, y: np.ndarray, splits: int = 5) -> float:
    """Logistic regression on all taps, mean test accuracy over ``splits`` fixed stratified halves."""
    from sklearn.model_selection import StratifiedShuffleSplit
    from sklearn.pipeline import Pipeline

    from transfuse.recipe import Recipe

    blocks = {"all": [0, X.shape[1]]}
    scores = [Pipeline(Recipe().build(blocks)).fit(X[train], y[train]).score(X[test], y[test])
              for train, test in StratifiedShuffleSplit(splits, test_size=0.5, random_state=0).split(X, y)]
    return float(np.mean(scores))


def runtimes(backbones: list[str], n: int) -> tuple[str, dict]:
    """Per backbone: the pure-model speed of each engine, then end-to-end extraction from disk
    (no cache) with each engine, its agreement with eager fp32 and its probe accuracy."""
    from transfuse.engines import capabilities, min_cosine

    rows, raw = [], {}
    for backbone in backbones:
        taps = RUNTIME_TAPS[backbone]
        items, y = runtime_data(backbone, n)
        spec = get_spec(backbone)
        engines = [e for e in ENGINES if e[0] in ("auto", *capabilities(spec)[0])]
        if "compile" not in capabilities(spec)[0]:
            engines = list(dict.fromkeys(engines))  # nothing to compile: one auto row
        extract_features(items[:8], backbone=backbone, layers=taps, cache=False, progress=False)  # load, warm up
        pure, ref, measured = None, None, []
        for rt, pr in engines:
            if rt == "compile" and pure is None:  # after the first auto row, which must find nothing compiled yet
                pure, built = pure_model(backbone, items, taps, engines)
            t = time.perf_counter()
            extract_features(items[:8], backbone=backbone, layers=taps, cache=False, progress=False, runtime=rt,
                             precision=pr)  # calibration, export or compile happen once, outside the timing
            setup = time.perf_counter() - t
            t = time.perf_counter()
            feats = extract_features(items, backbone=backbone, layers=taps, cache=False, progress=False,
                                     runtime=rt, precision=pr)
            speed = len(items) / (time.perf_counter() - t)
            ref = ref or feats
            cos = worst_cosine({k: torch.from_numpy(ref.X[:, s]) for k, s in ref.slices.items()},
                               {k: torch.from_numpy(feats.X[:, s]) for k, s in feats.slices.items()})
            measured.append((rt, pr, feats.engine, setup, speed, cos, probe_accuracy(feats.X, y)))
            print(backbone, rt, pr, f"{speed:.1f}/s", flush=True)
        if pure is None:
            pure, built = pure_model(backbone, items, taps, engines)
        agreeing = {f"{e.runtime} {e.precision}" for _, _, e, _, _, cos, _ in measured if cos >= min_cosine(e.precision)}
        best = max(v for k, v in pure.items() if k in agreeing)  # the yardstick: engines that pass the agreement check
        ref_acc = measured[0][-1]  # eager fp32 comes first
        seen_auto = False
        for rt, pr, engine, setup, speed, cos, acc in measured:
            name = f"{rt} {pr}"
            if rt == "auto":
                name = f"auto{', package built' if seen_auto else ''} -> {engine.runtime} {engine.precision}"
                seen_auto = True
            setup = max(setup, built.get(f"{rt} {pr}", 0.0))  # an export or compile done in the pure-model part
            pure_same = pure.get(f"{engine.runtime} {engine.precision}")
            raw.setdefault(backbone, {})[name] = {
                "end_to_end": speed, "pure_model": pure_same, "cosine": cos, "probe": acc,
                "resolved": [engine.runtime, engine.precision], "setup_s": setup}
            rows.append([backbone, name, f"{setup:.1f}", f"{pure_same:.1f}" if pure_same else "-", f"{speed:.1f}",
                         f"{speed / best:.2f}", f"{cos:.5f}", f"{acc:.3f}", f"{100 * (acc - ref_acc):+.1f}"])
        raw[backbone]["best_pure_model"] = best
        raw[backbone]["items"] = len(items)
    table = markdown_table(["backbone", "runtime precision", "set-up s (once)", "pure model items/s", "end-to-end items/s (from disk)",
                            "end-to-end / best agreeing pure model", "worst cosine to eager fp32", "probe accuracy",
                            "probe vs fp32 (points)"], rows)
    return table, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--memory", default="1000,10000", help="sizes for the peak-memory runs ('' to skip)")
    parser.add_argument("--runtimes", default="efficientnet_lite0,dinov2_vits14,minilm_l6,sound_effects",
                        help="backbones for the runtime/precision table ('' to skip)")
    parser.add_argument("--runtime-items", type=int, default=1000, help="items per backbone in that table")
    parser.add_argument("--only-runtimes", action="store_true", help="skip the naive and memory parts")
    args = parser.parse_args()
    if args.only_runtimes:
        table, raw = runtimes([b for b in args.runtimes.split(",") if b], args.runtime_items)
        save_results("extract_runtimes", RUNTIMES_INTRO.format(threads=torch.get_num_threads()) + table, raw)
        return
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
    if args.runtimes:
        table, raw = runtimes([b for b in args.runtimes.split(",") if b], args.runtime_items)
        save_results("extract_runtimes", RUNTIMES_INTRO.format(threads=torch.get_num_threads()) + table, raw)


RUNTIMES_INTRO = (
    "Each engine side by side in one process, {threads} threads, three taps per backbone, default batch sizes. "
    "Pure model: the forward pass and pooling alone, on inputs prepared beforehand (images: one decoded batch "
    "repeated; texts and clips: all batches tokenised / decoded first). End-to-end: extract_features from the "
    "files (texts) with no cache, default decoding. Cosine: the worst item and tap against eager fp32. "
    "Probe: logistic regression on the three taps, mean test accuracy over 5 fixed stratified half/half "
    "splits. Set-up: the first call's calibration on 8 items plus any ONNX export or compile (done once per machine "
    "and kept in the cache folder; without a cache, as here, once per process). The yardstick in the sixth column is "
    "the fastest pure-model figure among engines whose features keep the agreement the engines must show (cosine "
    ">= 0.99 in bf16, 0.999 in fp32, worst over all items here).\n\n")


if __name__ == "__main__":
    main()
