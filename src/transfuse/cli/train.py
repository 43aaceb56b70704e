"""Commands that train: fit, search, finetune, compare, train-source."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from transfuse.cli.app import app, log, out, report_line
from transfuse.cli.options import (
    Backbone,
    BatchSize,
    ClassWeight,
    DataOptions,
    EngineOptions,
    Epochs,
    FeatureOptions,
    ImageSize,
    Lr,
    OutputOptions,
    Patience,
    Precision,
    RecipeOptions,
    Resume,
    SearchOptions,
    SplitOptions,
    Strategy,
    Workers,
    between,
    options,
)


def _fit(data: DataOptions, split: SplitOptions, features: FeatureOptions, engine: EngineOptions,
         wanted, output: OutputOptions, auto: bool, cv: int, metric: str = "accuracy") -> None:
    """What ``fit`` and ``search`` run: one request to the workflow, one table back."""
    from transfuse.evaluate import metrics_table
    from transfuse.recipe import Recipe
    from transfuse.workflow import FitRequest, OutputSpec, fit

    source = data.load()
    log.info("data %s: %d %s items, %d classes", source.name, len(source), source.kind, len(source.classes))
    t0 = time.perf_counter()
    featurizer = engine.featurizer(backbone=features.backbone, layers=features.layers, pooling=features.pooling,
                                   weights=features.weights, long_text=features.long_text)
    res = fit(FitRequest(source=source, featurizer=featurizer, recipe=wanted, split=split.spec(),
                         output=OutputSpec(output.out, force=output.force), auto=auto, cv=cv,
                         skip_bad=data.skip_bad, budget=features.budget, metric=metric))
    if output.as_json:
        extra = {"search": res.search.table()} if res.search else {}
        output.json({"model_dir": str(res.out_dir), **res.metrics, **extra})
        return
    if res.search is not None:
        _print_search(res.search)
    if "source_choice" in res.metrics:
        choice = res.metrics["source_choice"]
        out.print(f"source chosen by ranking: {choice['backbone']} {choice['layer']} ({choice['why']})")
    trained = Recipe.from_dict(res.metrics["recipe"])
    name = res.model.steps[0][1].backbone
    label = f"{name} + {trained.head}" if trained == Recipe(head=trained.head, head_params=trained.head_params) else \
        f"{name} | {trained.label()}"
    out.print(metrics_table(res.metrics, title=f"{label} on {source.name}, test split"))
    out.print(f"trained on {res.n_train}, tested on {res.n_test} in {time.perf_counter() - t0:.1f}s; "
              f"model saved to {res.out_dir}")
    report_line(res.out_dir)


def _print_search(found) -> None:
    table = Table(title="cross-validated search on the training split (best first)")
    for col in ("candidate", f"cv {found.metric.replace('_', ' ')}", "± std", "fit s/fold"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for row in found.table():
        table.add_row(row["candidate"], f"{row['cv_score']:.3f}", f"{row['cv_std']:.3f}", f"{row['fit_seconds']:.2f}")
    out.print(table)
    out.print(f"winner: {found.reason}")


@app.command()
@options(data=DataOptions, split=SplitOptions, features=FeatureOptions, recipe=RecipeOptions, engine=EngineOptions,
         output=OutputOptions)
def fit(data: DataOptions, split: SplitOptions, features: FeatureOptions, recipe: RecipeOptions,
        engine: EngineOptions, output: OutputOptions) -> None:
    """Train a probe head on pretrained features, score it on a held-out split, save the model."""
    from transfuse.recipe import Recipe

    wanted = Recipe(fusion=recipe.fusion, select=recipe.select, head=recipe.head, head_params=recipe.head_params())
    _fit(data, split, features, engine, wanted, output, recipe.auto, recipe.cv, recipe.metric)


@app.command("search")
@options(data=DataOptions, split=SplitOptions, features=FeatureOptions, recipe=SearchOptions, engine=EngineOptions,
         output=OutputOptions)
def search(data: DataOptions, split: SplitOptions, features: FeatureOptions, recipe: SearchOptions,
           engine: EngineOptions, output: OutputOptions) -> None:
    """`fit --auto`: search layers x fusion x selection x C by cross-validation, train and save the best."""
    from transfuse.recipe import Recipe

    weighted = {"class_weight": recipe.class_weight} if recipe.class_weight else {}
    _fit(data, split, features, engine, Recipe(head=recipe.head, head_params=weighted), output, True, recipe.cv,
         recipe.metric)


@app.command()
@options(data=DataOptions, split=SplitOptions, output=OutputOptions)
def finetune(
    data: DataOptions,
    split: SplitOptions,
    output: OutputOptions,
    backbone: Backbone = None,
    strategy: Strategy = None,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Same architecture from random weights, same budget.")] = False,
    epochs: Epochs = 10,
    lr: Lr = None,
    backbone_lr: Annotated[Optional[float], typer.Option("--backbone-lr", callback=between(0), help="Learning rate of the top pretrained block (default: lr x layer-decay for images, 2e-5 for text encoders).")] = None,
    layer_decay: Annotated[float, typer.Option("--layer-decay", max=1.0, callback=between(0), help="Each group further down gets this times less, compounded.")] = 0.75,
    l2sp: Annotated[float, typer.Option("--l2sp", min=0.0, help="L2-SP strength pulling weights toward the pretrained ones (0 = off).")] = 0.0,
    probe_epochs: Annotated[int, typer.Option("--probe-epochs", min=0, help="Head-only epochs before lp-ft/gradual unfreeze.")] = 3,
    image_size: ImageSize = None,
    batch_size: BatchSize = None,
    patience: Patience = 5,
    precision: Precision = None,
    resume: Resume = False,
    workers: Workers = None,
    devices: Annotated[int, typer.Option("--devices", min=1, help="Train with DDP on this many GPUs (or CPU processes without a GPU) per machine.")] = 1,
    num_nodes: Annotated[int, typer.Option("--num-nodes", min=1, help="Machines taking part in DDP: run the same command on each, with NODE_RANK, MASTER_ADDR and MASTER_PORT set (or under torchrun), and the same --out; see docs/scale-out.md.")] = 1,
    class_weight: ClassWeight = None,
) -> None:
    """Parameter-based transfer: train a new output layer, then fine-tune part or all of the network."""
    from transfuse.backbones import default_backbone
    from transfuse.evaluate import metrics_table
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.workflow import OutputSpec
    from transfuse.workflow import finetune as run_finetune

    source = data.load()
    backbone = backbone or default_backbone(source.kind)
    strategy = strategy or ("full" if from_scratch else "lp-ft")  # nothing to probe on random weights
    config = FinetuneConfig(backbone=backbone, strategy=strategy, from_scratch=from_scratch, epochs=epochs, lr=lr,
                            backbone_lr=backbone_lr, layer_decay=layer_decay, l2sp=l2sp, probe_epochs=probe_epochs,
                            image_size=image_size, batch_size=batch_size or FinetuneConfig.batch_size,
                            patience=patience, precision=precision or "auto", seed=split.seed,
                            class_weight=class_weight)
    metrics, folder = run_finetune(source, config, OutputSpec(output.out, force=output.force), split.spec(), resume=resume,
                                   skip_bad=data.skip_bad, num_workers=workers, devices=devices,
                                   num_nodes=num_nodes, progress=False if output.as_json else None)  # Lightning's bar writes to stdout
    if not metrics:  # a DDP worker process: the first process reports
        return
    if output.as_json:
        output.json({"model_dir": str(folder), **metrics})
        return
    out.print(metrics_table(metrics, title=f"{backbone} {config.run_name} on {source.name}, test split"))
    out.print(f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.1f}s; model saved to {folder}")
    report_line(folder)


@app.command()
@options(data=DataOptions, split=SplitOptions, output=OutputOptions)
def compare(
    data: DataOptions,
    split: SplitOptions,
    output: OutputOptions,
    backbone: Backbone = None,
    strategies: Annotated[str, typer.Option("--strategies", help="Fine-tuning strategies to run besides scratch and the probe, comma-separated.")] = "head,lp-ft",
    epochs: Epochs = 10,
    image_size: ImageSize = None,
    class_weight: ClassWeight = None,
) -> None:
    """Does transfer pay? Scratch vs feature probe vs fine-tuning strategies on one split, one table."""
    from transfuse.backbones import default_backbone
    from transfuse.workflow import compare_source

    source = data.load()
    backbone = backbone or default_backbone(source.kind)
    names = tuple(s.strip() for s in strategies.split(",") if s.strip())
    rows = compare_source(source, output.out, backbone=backbone, strategies=names, epochs=epochs,
                          image_size=image_size, seed=split.seed, test_size=split.test_size, skip_bad=data.skip_bad,
                          force=output.force, progress=False if output.as_json else None,  # Lightning's bar: stdout
                          class_weight=class_weight)
    if output.as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{backbone} on {source.name}: same split (seed {split.seed}), same test set")
    for col in ("method", "accuracy", "balanced acc.", "macro F1", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['accuracy']:.3f}", f"{r['balanced_accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      f"{r['seconds']:.0f}")
    out.print(table)
    out.print(f"models and compare.json in {Path(rows[0]['model_dir']).parent}")
    report_line(Path(rows[0]["model_dir"]).parent)


@app.command("train-source")
@options(data=DataOptions, split=SplitOptions, output=OutputOptions)
def train_source(
    data: DataOptions,
    split: SplitOptions,
    output: OutputOptions,
    arch: Annotated[Optional[str], typer.Option("--arch", help="Images: small-cnn (Conv1-Pool1-Conv2-Pool2-Flatten-Dense, 28 px unless --image-size; the default), vgg11, resnet18. Sequences (.npy frames, .npz): gru (the default) or lstm.")] = None,
    epochs: Epochs = 10,
    lr: Lr = None,
    image_size: ImageSize = None,
    batch_size: BatchSize = None,
    patience: Patience = 5,
    precision: Precision = None,
    resume: Resume = False,
    workers: Workers = None,
) -> None:
    """Train a network from scratch on a source task of your own, then transfer from it with
    --backbone local:<out> (fit, search, finetune, compare, layers)."""
    from transfuse.evaluate import metrics_table
    from transfuse.finetune.config import FinetuneConfig
    from transfuse.workflow import OutputSpec
    from transfuse.workflow import train_source as run

    source = data.load()
    metrics, folder = run(source, arch, OutputSpec(output.out, force=output.force), split.spec(), image_size=image_size,
                          epochs=epochs, lr=lr, batch_size=batch_size or FinetuneConfig.batch_size, patience=patience,
                          precision=precision or "auto", seed=split.seed, resume=resume, skip_bad=data.skip_bad,
                          num_workers=workers, progress=False if output.as_json else None)
    if not metrics:
        return
    folder = Path(folder).resolve()  # a local: name that works from any working directory
    if output.as_json:
        output.json({"model_dir": str(folder), "backbone": f"local:{folder}", **metrics})
        return
    out.print(metrics_table(metrics, title=f"{arch or 'source network'} trained from scratch on {source.name}, "
                                           f"test split"))
    out.print(f"{metrics['epochs_run']} epochs in {metrics['train_seconds']:.1f}s; source saved to {folder}")
    out.print(f"transfer from it with --backbone local:{folder} (its layers: transfuse layers local:{folder})")
