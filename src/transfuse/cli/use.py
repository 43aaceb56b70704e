"""Commands that use a saved model: predict, evaluate, export, report."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from transfuse.cli.app import app, out, report_line
from transfuse.cli.options import DataOptions, EngineOptions, SkipBad, TextColumn, options
from transfuse.cli.tables import middle

ModelDir = Annotated[Path, typer.Argument(help="A model directory written by `transfuse fit` or `transfuse finetune`.")]
ModelOrOnnx = Annotated[Path, typer.Argument(help="A model directory written by `transfuse fit`, `finetune` or `auto`, or an .onnx file written by `transfuse export`.")]


@app.command()
@options(engine=EngineOptions)
def predict(
    model_dir: ModelOrOnnx,
    inputs: Annotated[list[Path], typer.Argument(help="Image (or audio) files or folders; for a text model, .txt files (one text per line) or CSV/JSONL tables.")],
    engine: EngineOptions,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write predictions to a .csv or .json file, or with --cluster to a new folder NAME.parquet (Parquet part files written by the workers: item, label, error, p:<class>).")] = None,
    text_column: TextColumn = None,
    skip_bad: SkipBad = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Predict the class (and probabilities) of new images, clips or texts. With --cluster and
    --out NAME.parquet the whole job runs on Ray: each worker loads the model once and writes its rows."""
    from transfuse.pipeline import load_model, model_modality
    from transfuse.workflow import predict_paths

    if model_dir.suffix == ".onnx" and model_dir.is_file():  # runs on ONNX Runtime alone
        from transfuse.export.runtime import ExportedModel

        model = ExportedModel(model_dir)
    else:
        model = load_model(model_dir, **engine.settings())
    modality = model_modality(model)
    items = _items(inputs, modality, text_column)
    if out_file is not None and out_file.suffix.lower() == ".parquet":
        _predict_on_ray(model_dir, items, out_file, engine, skip_bad, as_json)
        return
    records = predict_paths(model, items, on_error="skip" if skip_bad else "raise")
    if out_file is not None:
        _write_records(records, out_file)
    if as_json:
        print(json.dumps(records))
        return
    table = Table(title=f"predictions of {model_dir}")
    table.add_column("text" if modality == "text" else "path", overflow="ellipsis", no_wrap=True, max_width=48)
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rec in records:
        p = rec.get("probabilities", {}).get(rec["label"]) if rec["label"] else None
        name = rec["text"] if "text" in rec else middle(rec["path"], 48)  # a path keeps its file name
        table.add_row(name, rec["label"] or f"[{rec.get('error')}]",
                      "" if p is None else f"{p:.3f}")
    out.print(table)
    if out_file is not None:
        out.print(f"wrote {len(records)} predictions to {out_file}")


def _items(inputs: list[Path], modality: str, text_column: Optional[str]) -> list[str]:
    """The items ``inputs`` name for a model of ``modality``: texts read from files, or file paths."""
    from transfuse.data import find_images, read_texts

    if modality == "text":
        return [text for f in inputs for text in read_texts(f, text_column)]
    if modality == "audio":
        from transfuse.data.audio import AUDIO_EXTENSIONS

        return find_images(inputs, AUDIO_EXTENSIONS, "audio")
    if modality == "sequence":
        from transfuse.data.sequences import SEQUENCE_EXTENSIONS

        return find_images(inputs, SEQUENCE_EXTENSIONS, "sequence (.npy)")
    return find_images(inputs)


def _predict_on_ray(model_dir: Path, items: list[str], out_file: Path, engine: EngineOptions, skip_bad: bool,
                    as_json: bool) -> None:
    from transfuse.batch_predict import predict_on_ray
    from transfuse.cluster import Cluster
    from transfuse.errors import CorruptInputError

    if engine.cluster is None:
        raise typer.BadParameter("--out NAME.parquet streams predictions from a Ray cluster: add --cluster ray (or "
                                 "write a .csv or .json file here)")
    if model_dir.suffix == ".onnx":
        raise typer.BadParameter("--cluster predicts with a model directory; give the folder the .onnx file was "
                                 "exported from")
    settings = engine.settings() | {"cache": False}  # --device also decides whether actors ask for GPUs
    done = predict_on_ray(Cluster.parse(engine.cluster, engine.cluster_workers), model_dir, items, out_file, settings)
    if done["unreadable"] and not skip_bad:
        raise CorruptInputError(f"{done['unreadable']} of {done['items']} files could not be read (their rows in "
                                f"{out_file} have error=unreadable); pass --skip-bad to accept that")
    if as_json:
        print(json.dumps(done | {"out": str(out_file)}))
        return
    out.print(f"wrote {done['rows']} predictions to {out_file} (Parquet, written by the workers"
              f"{'; ' + str(done['unreadable']) + ' unreadable' if done['unreadable'] else ''})")


def _write_records(records: list[dict], path: Path) -> None:
    if path.suffix.lower() not in (".csv", ".json"):
        raise typer.BadParameter(f"--out must end in .csv or .json, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(records, indent=2) + "\n")
        return
    classes = sorted({c for r in records for c in r.get("probabilities", {})})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        key = "text" if records and "text" in records[0] else "path"
        writer.writerow([key, "label", *[f"p_{c}" for c in classes]])
        for r in records:
            probs = r.get("probabilities", {})
            writer.writerow([r[key], r["label"] or "", *[f"{probs[c]:.6f}" if c in probs else "" for c in classes]])


@app.command()
@options(data=DataOptions, engine=EngineOptions)
def evaluate(
    model_dir: ModelDir,
    data: DataOptions,
    engine: EngineOptions,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the metrics to this JSON file.")] = None,
    report_dir: Annotated[Optional[Path], typer.Option("--report", help="Also write the metrics, every item's prediction and report.html into this folder.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Score a saved model on labelled data (every item is used for testing)."""
    from transfuse.evaluate import metrics_table
    from transfuse.workflow import evaluate_dir

    source = data.load()
    metrics = evaluate_dir(model_dir, source, skip_bad=data.skip_bad, report_dir=report_dir, **engine.settings())
    if out_file is not None:
        out_file.write_text(json.dumps(metrics, indent=2) + "\n")
    if as_json:
        print(json.dumps(metrics))
        return
    out.print(metrics_table(metrics, title=f"{model_dir} on {source.name}"))
    overlap = metrics.get("overlap")
    if overlap:
        unseen = overlap["unseen"]
        rest = f"; on the {unseen['n']} unseen items: accuracy {unseen['accuracy']:.3f}" if unseen else ""
        out.print(f"{overlap['seen']} of {metrics['n']} items were used to train this model (their scores are "
                  f"optimistic){rest}")
    report_line(report_dir)


@app.command()
def export(
    model_dir: ModelDir,
    out_file: Annotated[Path, typer.Option("--out", help="The .onnx file to write (a .json with the classes and preprocessing goes beside it).")] = Path("model.onnx"),
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset of the graph (default 17, as the backbones are exported).")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="Also write an int8 version (<out>.int8.onnx): 'int8'. Needs --data.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="With --quantize: the labelled data the model was trained from; a sample of its training items calibrates, the items it was not trained on measure the accuracy change.")] = None,
    max_drop: Annotated[float, typer.Option(help="With --quantize: the most accuracy (0.02 = 2 points) int8 may cost on the unseen items; above it nothing is written.")] = 0.02,
) -> None:
    """Write a saved model as one ONNX graph, pixels (or token ids) in, class probabilities out,
    checked against transfuse's own predictions before it is written; `transfuse predict model.onnx
    FILES` runs it without torch."""
    from transfuse.errors import DataError
    from transfuse.export import export_model

    if quantize not in (None, "int8"):
        raise DataError(f"--quantize takes int8, got {quantize!r}")
    if quantize and data is None:
        raise DataError("--quantize int8 needs --data DATA (the labelled data the model was trained from) to "
                        "calibrate and to measure what int8 costs")
    exported = export_model(model_dir, out_file, opset=opset)
    size = exported.path.stat().st_size / 2**20
    out.print(f"wrote {exported.path} ({size:.1f} MB; {exported.metadata['output']} of "
              f"{len(exported.metadata['classes'])} classes) and {exported.sidecar}")
    out.print(f"input: {exported.metadata['preprocessing']}")
    out.print(f"checked: {exported.metadata['checked']}")
    if quantize:
        from transfuse.data import load_source
        from transfuse.export.quantize import quantize_int8

        q = quantize_int8(exported.path, exported.path.with_suffix(".int8.onnx"), model_dir, load_source(data),
                          max_drop)
        out.print(f"wrote {q.path} ({q.path.stat().st_size / 2**20:.1f} MB, {q.method}); accuracy on the "
                  f"{q.n_test} items the model was not trained on: {q.fp32_accuracy:.3f} fp32, {q.int8_accuracy:.3f} "
                  f"int8 ({-100 * q.drop:+.1f} points)")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Output folders of fit, auto, finetune, compare or evaluate runs; several are laid side by side.")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="The HTML file to write (default: DIR/report.html for one run, ./report.html for several).")] = None,
) -> None:
    """(Re)build the HTML report of saved runs from their files: metrics with intervals, per-class
    table, confusion matrices, the most confident mistakes, a 2-D map of the features, calibration,
    and what a search tried. One self-contained file: no network, opens in any browser."""
    from transfuse.report import write_report

    path = write_report(run_dirs, out_file)
    out.print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB; figure data in {path.parent / 'report_files'})")
