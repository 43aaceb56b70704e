"""``transfuse auto``: rank sources, probe, maybe fine-tune, keep the best, within a budget."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from transfuse.cli.app import app, log, out, report_line
from transfuse.cli.options import (
    AutoBudget,
    BatchSize,
    ClassWeight,
    Cluster,
    ClusterWorkers,
    Cv,
    DataOptions,
    Device,
    Metric,
    NoCache,
    OutputOptions,
    SplitOptions,
    Workers,
    cluster_scope,
    options,
)


@app.command("auto")
@options(data=DataOptions, split=SplitOptions, output=OutputOptions)
def auto(
    data: DataOptions,
    split: SplitOptions,
    output: OutputOptions,
    budget: AutoBudget = "10m",
    metric: Metric = "accuracy",
    class_weight: ClassWeight = None,
    finetune: Annotated[bool, typer.Option("--finetune/--no-finetune", help="Allow fine-tuning when the budget leaves time for it (the default), or probe pretrained features only.")] = True,
    backbones: Annotated[int, typer.Option("--keep", min=1, help="How many of the best-ranked sources are probed first (more follow while the budget allows).")] = 2,
    cv: Cv = 5,
    batch_size: BatchSize = None,
    workers: Workers = None,
    device: Device = None,
    no_cache: NoCache = False,
    cluster: Cluster = None,
    cluster_workers: ClusterWorkers = None,
) -> None:
    """The best model for your data within a budget: rank the sources, probe layers, pooling, fusion,
    selection and heads by cross-validation, fine-tune when it fits, keep the best (or both averaged)."""
    from transfuse.auto import AutoRequest, run_auto
    from transfuse.evaluate import metrics_table
    from transfuse.workflow import OutputSpec

    source = data.load()
    if data.skip_bad:
        log.warning("--skip-bad leaves out empty class folders only: auto needs every file readable (an unreadable "
                    "one stops the ranking with its name; remove it, or use `transfuse fit --skip-bad`)")
    log.info("data %s: %d %s items, %d classes; budget %s", source.name, len(source), source.kind,
             len(source.classes), budget)
    t0 = time.perf_counter()
    engine = {k: v for k, v in {"batch_size": batch_size, "num_workers": workers, "device": device}.items()
              if v is not None} | ({"cache": False} if no_cache else {})
    with cluster_scope(cluster, cluster_workers):  # the ranking's and the probes' extraction; fine-tuning stays here
        res = run_auto(AutoRequest(source=source, budget=budget, split=split.spec(),
                                   output=OutputSpec(output.out, force=output.force), metric=metric,
                                   class_weight=class_weight, finetune=None if finetune else False, cv=cv,
                                   backbones=backbones, engine=engine, progress=False if output.as_json else None))
    if output.as_json:
        output.json({"model_dir": str(res.out_dir), **res.metrics})
        return
    decision = res.metrics["auto"]
    stages = Table(title="what auto did")
    for col in ("stage", "seconds", "trials"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for s in decision["stages"]:
        stages.add_row(s["stage"], f"{s['seconds']:.0f}", str(s["trials"]))
    out.print(stages)
    for s in decision["stages"]:
        for note in s["notes"]:
            out.print(f"- {escape(note)}", highlight=False)
    best = sorted(res.trials, key=lambda r: -r["cv_score"])[:8]
    table = Table(title=f"best trials (cross-validated {metric.replace('_', ' ')} on the training split)")
    for col in ("candidate", "cv", "± std"):
        table.add_column(col, justify="left" if col == "candidate" else "right", overflow="fold")
    for r in best:
        table.add_row(escape(r["candidate"]), f"{r['cv_score']:.3f}", f"{r['cv_std']:.3f}")
    out.print(table)
    out.print(f"kept: {escape(decision['winner']['why'])}", highlight=False)
    out.print(metrics_table(res.metrics, title=f"auto ({decision['winner']['kind']}) on {source.name}, test split"))
    out.print(f"trained on {res.n_train}, tested on {res.n_test}; {time.perf_counter() - t0:.0f}s and "
              f"{decision['budget']['used_trials']} trials (budget: {budget}); model saved to {res.out_dir} (every "
              f"trial in auto.json)")
    report_line(res.out_dir)
