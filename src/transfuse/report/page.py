"""The HTML of a report: one page, inline CSS and figures, no scripts, nothing fetched. Sections
appear where the run saved what they need; each figure's data is written under ``data_dir``."""

from __future__ import annotations

import csv
import html
import json
import os
import time
from pathlib import Path

import numpy as np

from transfuse.report import figures, media
from transfuse.report.runfiles import Run
from transfuse.report.stats import bootstrap_intervals, calibration, confident_mistakes, paired_difference

METRICS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"))
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1rem 1.5rem;color:#1d2330;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #dde;
padding-bottom:.2rem}h3{font-size:1rem;margin:1rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0 .8rem;font-size:13px}td,th{border:1px solid #dde;padding:.2rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f5fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.runs{display:grid;gap:1.5rem}.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs img{max-width:calc(50% - .5rem);height:auto}.figs img.wide{max-width:100%}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.6rem}
.card{border:1px solid #dde;border-radius:6px;padding:.4rem;font-size:12px;overflow-wrap:anywhere}
.card .bad{color:#b22}.thumb{display:block;margin:0 auto .3rem;max-width:100%}audio{width:100%}
.muted{color:#667}.text{display:block;margin-bottom:.3rem}code{font-size:12px;background:#f3f5fa;padding:0 .2rem}
.headline{font-size:1.05rem;margin:.2rem 0 .6rem}
.note{background:#fff8e5;border-left:3px solid #e0a800;padding:.3rem .6rem}
@media print{section{break-inside:avoid}.runs{display:block}}
"""


def render(runs: list[Run], data_dir: Path) -> str:
    """The whole page for ``runs`` (several: a comparison table, then the runs in columns)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs)
    intervals = [_intervals(run) for run in runs]  # the bootstrap once per run: the costliest step
    columns = []
    for run, label, ci in zip(runs, labels, intervals):
        folder = data_dir if len(runs) == 1 else data_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        columns.append(f"<div>{_run(run, folder, data_dir.parent, label, ci)}</div>")
    title = f"transfuse report: {runs[0].name}" if len(runs) == 1 else f"transfuse report: {len(runs)} runs"
    head = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width,initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"muted\">built {time.strftime('%Y-%m-%d %H:%M')} from the saved files; rebuild with "
            f"<code>transfuse report {' '.join(html.escape(str(r.path)) for r in runs)}</code>; each figure's "
            f"data is in <code>{html.escape(data_dir.name)}/</code></p>")
    summary = _comparison(runs, labels, intervals) if len(runs) > 1 else ""
    grid = f"<div class=\"runs\" style=\"grid-template-columns:repeat({len(runs)},minmax(0,1fr))\">{''.join(columns)}</div>"
    return head + summary + grid + "</body></html>\n"


def run_labels(runs: list[Run]) -> list[str]:
    """A distinct name per run: its folder's name, with the parent folder's (then a number) where
    two runs share one."""
    labels = [r.name for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.path.resolve().parent.name}-{r.name}" for r in runs]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def _run(run: Run, folder: Path, root: Path, label: str, intervals: dict) -> str:
    """One run's sections; ``folder`` takes its figure data, ``root`` is where the page is written."""
    parts = [f"<h2>{html.escape(label)}</h2>"]
    pred = run.predictions
    parts.append(_headline(run, intervals))
    if run.compare:
        parts.append(_compare(run, folder, root))
    if run.ranking:
        parts.append(_ranking(run, folder))
    parts.append(_about(run))
    parts.append(_metrics(run, intervals, folder))
    if run.metrics.get("confusion_matrix"):
        parts.append(_confusion(run, folder))
    if pred is not None:
        parts.append(_mistakes(run, folder))
        cal = calibration(pred)
        if cal is not None:
            parts.append(_calibration(cal, folder))
    if run.map is not None:
        parts.append(_map(run))
    if run.curves:
        parts.append(_curves(run, folder))
    if run.search or run.auto:
        parts.append(_search(run, folder))
    if run.problems:
        parts.append("<p class=\"note\">" + "<br>".join(html.escape(p) for p in run.problems) + "</p>")
    return "".join(parts)


def _intervals(run: Run) -> dict:
    """Bootstrap intervals of a run's test metrics, macro-F1 averaged over the model's classes (as
    metrics.json averages it)."""
    if run.predictions is None:
        return {}
    return bootstrap_intervals(run.predictions, classes=run.metrics.get("classes"))


# -- the run ----------------------------------------------------------------------------------------

def _headline(run: Run, intervals: dict) -> str:
    """One line a person reads first: the main metric with its interval, on how many test items."""
    met = run.metrics
    if "accuracy" not in met:
        return ""
    low, high = intervals.get("accuracy", (None, None))
    ci = f" (95% interval {low:.3f}–{high:.3f})" if low is not None else ""
    return (f"<p class=headline><b>accuracy {met['accuracy']:.3f}</b>{ci}, balanced accuracy "
            f"{met.get('balanced_accuracy', float('nan')):.3f}, macro-F1 {met.get('macro_f1', float('nan')):.3f} on "
            f"{met.get('n', '?')} test items</p>")


def _about(run: Run) -> str:
    cfg, met = run.config, run.metrics
    data = cfg.get("data", {})
    rows = []
    if run.evaluation:
        rows.append(("evaluated", f"the model in {run.evaluation.get('model_dir')}, on every item of the data below"))
    if data:
        rows.append(("data", f"{data.get('name', '?')} ({data.get('kind', run.modality)}): {data.get('n_items', '?')} "
                              f"items" + (f", {data['skipped']} unreadable left out" if data.get("skipped") else "")))
    split = met.get("split")
    if split:
        held = f", {split['validation']} validation" if split.get("validation") else ""
        size = f"test size {split['test_size']}, " if split.get("test_size") is not None else ""
        rows.append(("split", f"{split.get('train')} train{held} / {split.get('test')} test ({size}seed "
                              f"{split.get('seed')})"))
    for part in cfg.get("parts", []):
        params, fitted = part.get("meta", {}).get("params", {}), part.get("meta", {}).get("fitted", {})
        tuned = part.get("meta", {}).get("finetune")
        if tuned:
            ran = f" ({met['epochs_run']} run, {met.get('train_seconds', 0):.0f} s)" if "epochs_run" in met else ""
            rows.append(("fine-tuning", f"{tuned.get('backbone')}, strategy {tuned.get('strategy')}, "
                                        f"{'from scratch' if tuned.get('from_scratch') else 'pretrained weights'}; "
                                        f"{tuned.get('epochs')} epochs planned{ran}; image size {tuned.get('image_size')},"
                                        f" batch {tuned.get('batch_size')}, seed {tuned.get('seed')}, precision "
                                        f"{met.get('precision', tuned.get('precision'))}"))
        elif "backbone" in params:
            layers = ", ".join(fitted.get("layers") or []) or params.get("layers") or "default"
            rows.append(("backbone", f"{params['backbone']} — layers {layers}; pooling "
                                     f"{params.get('pooling') or 'default'}; weights {fitted.get('weights_id', params.get('weights'))}"))
        else:  # scalar settings only: a fusion's block layout is in config.json
            settings = ", ".join(f"{k}={v}" for k, v in params.items() if isinstance(v, (str, int, float, bool)))
            rows.append((part.get("name", "part"), f"{part.get('kind')}" + (f" ({settings})" if settings else "")))
    recipe = met.get("recipe")
    if recipe:
        rows.append(("recipe", ", ".join(f"{k}={v}" for k, v in recipe.items() if v not in (None, {}, []))))
    for name, note in (met.get("extraction") or {}).items():
        rows.append(("engine", f"{name}: {note}"))
    if isinstance(met.get("seconds"), dict):
        rows.append(("seconds", ", ".join(f"{k} {v:.1f}" for k, v in met["seconds"].items())))
    if cfg.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())))
    if cfg.get("command"):
        rows.append(("command", f"<code>{html.escape(cfg['command'])}</code>"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v if k == 'command' else html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    counts = _class_counts(run)
    if not rows and not counts:
        return ""
    return f"<section><h3>The run</h3><table>{body}</table>{counts}</section>"


def _class_counts(run: Run) -> str:
    totals = run.config.get("data", {}).get("per_class") or {}
    test = {c: r.get("support", 0) for c, r in (run.metrics.get("per_class") or {}).items()}
    if not totals and not test:
        return ""
    classes = list(totals or test)
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td class=num>{totals.get(c, '')}</td>"
                   f"<td class=num>{test.get(c, '')}</td></tr>" for c in classes)
    return f"<table><tr><th>class</th><th>items</th><th>in the test split</th></tr>{rows}</table>"


# -- metrics --------------------------------------------------------------------------------------

def _metrics(run: Run, intervals: dict, folder: Path) -> str:
    met = run.metrics
    if not any(k in met for k, _ in METRICS):
        return ""
    rows = []
    for key, label in METRICS:
        if key in met:
            low, high = intervals.get(key, (None, None))
            ci = f"{low:.3f} – {high:.3f}" if low is not None else "—"
            rows.append(f"<tr><th>{label}</th><td class=num>{met[key]:.3f}</td><td class=num>{ci}</td></tr>")
    (folder / "intervals.json").write_text(json.dumps({k: met.get(k) for k, _ in METRICS} | {"intervals_95": intervals},
                                                      indent=2) + "\n")
    n = met.get("n", len(run.predictions.truth) if run.predictions else "?")
    per_class = met.get("per_class") or {}
    _csv(folder / "per_class.csv", ["class", "precision", "recall", "f1", "support"],
         [[c, r["precision"], r["recall"], r["f1"], r["support"]] for c, r in per_class.items()])
    table = "".join(f"<tr><td>{html.escape(c)}</td><td class=num>{r['precision']:.3f}</td><td class=num>"
                    f"{r['recall']:.3f}</td><td class=num>{r['f1']:.3f}</td><td class=num>{r['support']}</td></tr>"
                    for c, r in per_class.items())
    return (f"<section><h3>Test metrics (n={n})</h3><table><tr><th></th><th>value</th><th>95% interval "
            f"(bootstrap, 1000 draws)</th></tr>{''.join(rows)}</table>"
            f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{table}"
            f"</table></section>")


def _confusion(run: Run, folder: Path) -> str:
    cm, classes = np.asarray(run.metrics["confusion_matrix"]), run.metrics["classes"]
    _csv(folder / "confusion.csv", ["true \\ predicted", *classes], [[c, *row] for c, row in zip(classes, cm.tolist())])
    return (f"<section><h3>Confusion matrix</h3><div class=figs><img alt=\"confusion counts\" "
            f"src=\"{figures.confusion(cm, classes, False)}\"><img alt=\"confusion normalised\" "
            f"src=\"{figures.confusion(cm, classes, True)}\"></div></section>")


def _mistakes(run: Run, folder: Path) -> str:
    wrong = confident_mistakes(run.predictions)
    _csv(folder / "mistakes.csv", ["item", "true", "predicted", "confidence"],
         [[w["item"], w["true"], w["predicted"], w.get("confidence", "")] for w in wrong])
    if not wrong:
        return "<section><h3>Most confident mistakes</h3><p>none: every test item was right.</p></section>"
    cards = "".join(
        f"<div class=card>{media.show(w['item'], run.modality)}<div>{media.caption(w['item'], run.modality)}</div>"
        f"<div>true <b>{html.escape(w['true'])}</b></div><div class=bad>predicted <b>{html.escape(w['predicted'])}"
        f"</b>" + (f" ({w['confidence']:.2f})" if "confidence" in w else "") + "</div></div>" for w in wrong)
    return f"<section><h3>Most confident mistakes</h3><div class=cards>{cards}</div></section>"


def _calibration(cal: dict, folder: Path) -> str:
    _csv(folder / "calibration.csv", ["low", "high", "count", "confidence", "accuracy"],
         [[b["low"], b["high"], b["count"], b["confidence"], b["accuracy"]] for b in cal["bins"]])
    return (f"<section><h3>Calibration</h3><div class=figs><img alt=\"reliability diagram\" "
            f"src=\"{figures.reliability(cal['bins'], cal['ece'])}\"></div><p class=muted>Expected calibration error "
            f"{cal['ece']:.3f}: the mean gap between how sure the model is and how often it is right.</p></section>")


def _map(run: Run) -> str:
    imgs = "".join(f"<img alt=\"{split} map\" src=\"{figures.feature_map(run.map, split)}\">"
                   for split in ("train", "test") if (run.map["split"] == split).any())
    return (f"<section><h3>The features the head reads (PCA to 2-D)</h3><div class=figs>{imgs}</div>"
            f"<p class=muted>Data: <code>map.csv</code> in the run folder.</p></section>")


def _curves(run: Run, folder: Path) -> str:
    curves = run.curves
    keys = [k for k in curves if k != "epoch"]
    _csv(folder / "curves.csv", ["epoch", *keys], [[e, *(curves[k][i] for k in keys)]
                                                  for i, e in enumerate(curves["epoch"])])
    met = run.metrics
    note = ""
    if "epochs_run" in met:
        note = (f"<p class=muted>{met['epochs_run']} epochs in {met.get('train_seconds', 0):.0f} s; the network kept "
                f"is the epoch with the best validation accuracy. The dotted line counts the parameter groups that "
                f"were trainable (the head first, then more as the strategy unfreezes them).</p>")
    return (f"<section><h3>Fine-tuning, epoch by epoch</h3><div class=figs><img class=wide alt=\"training curves\" "
            f"src=\"{figures.training_curves(curves)}\"></div>{note}</section>")


def _compare(run: Run, folder: Path, root: Path) -> str:
    """Scratch against the probe and each fine-tuning strategy: bars with intervals, the verdict in
    one sentence, and each method's own report."""
    rows = run.compare
    names, values, lows, highs, table = [], [], [], [], []
    for row in rows:
        method = row.get("run")
        accuracy = row.get("accuracy")
        if accuracy is None:
            continue
        low, high = _intervals(method).get("accuracy", (accuracy, accuracy)) if method is not None \
            else (accuracy, accuracy)
        names.append(row["method"])
        values.append(accuracy)
        lows.append(low)
        highs.append(high)
        link = ""
        if method is not None and (method.path / "report.html").is_file():
            href = os.path.relpath(method.path.resolve() / "report.html", root.resolve())
            link = f"<a href=\"{html.escape(href)}\">report</a>"
        table.append([row["method"], accuracy, low, high, row.get("balanced_accuracy"), row.get("macro_f1"),
                      row.get("seconds"), link])
    _csv(folder / "compare.csv", ["method", "accuracy", "low", "high", "balanced_accuracy", "macro_f1", "seconds"],
         [r[:7] for r in table])
    body = "".join(f"<tr><td>{html.escape(r[0])}</td><td class=num>{r[1]:.3f}</td><td class=num>{r[2]:.3f}–{r[3]:.3f}"
                   f"</td><td class=num>{_num(r[4])}</td><td class=num>{_num(r[5])}</td><td class=num>"
                   f"{_num(r[6], '.0f')}</td><td>{r[7]}</td></tr>" for r in table)
    figure = f"<div class=figs><img class=wide alt=\"methods\" src=\"{figures.method_bars(names, values, lows, highs)}\"></div>" \
        if names else ""
    return (f"<section><h3>Does transfer pay here?</h3><p class=headline>{html.escape(verdict(rows))}</p>{figure}"
            f"<table><tr><th>method</th><th>accuracy</th><th>95% interval</th><th>balanced accuracy</th>"
            f"<th>macro F1</th><th>seconds</th><th></th></tr>{body}</table></section>")


def verdict(rows: list[dict]) -> str:
    """One sentence: the best transfer method against training from scratch on the same test items,
    with a paired bootstrap interval of the accuracy difference when both saved their predictions."""
    scratch = next((r for r in rows if "scratch" in r["method"] and r.get("accuracy") is not None), None)
    transfer = [r for r in rows if r is not scratch and r.get("accuracy") is not None]
    if scratch is None or not transfer:
        return "No from-scratch run to compare with."
    best = max(transfer, key=lambda r: r["accuracy"])
    a, b = best.get("run"), scratch.get("run")
    paired = paired_difference(a.predictions, b.predictions) if a and b and a.predictions and b.predictions else None
    points = 100 * (paired["difference"] if paired else best["accuracy"] - scratch["accuracy"])
    if paired is None:
        return (f"Transfer {'pays' if points > 0 else 'does not pay'} here by {abs(points):.1f} points: {best['method']} "
                f"{best['accuracy']:.3f} against {scratch['accuracy']:.3f} from scratch (no saved predictions, so no "
                f"interval).")
    span = f"95% interval {100 * paired['low']:+.1f} to {100 * paired['high']:+.1f} points, paired bootstrap over the " \
           f"{paired['n']} test items both scored"
    if paired["low"] > 0:
        return f"Transfer pays here by {points:.1f} points: {best['method']} against training from scratch ({span})."
    if paired["high"] < 0:
        return (f"Transfer does not pay here: training from scratch beats the best transfer method, {best['method']}, "
                f"by {-points:.1f} points ({span}).")
    return (f"Transfer does not pay here clearly: {best['method']} differs from training from scratch by "
            f"{points:+.1f} points, and the interval includes no difference ({span}).")


def _ranking(run: Run, folder: Path) -> str:
    """``transfuse rank``: every candidate with each score and its spread over resamples, best first."""
    rows = run.ranking
    names = list(dict.fromkeys(n for r in rows for n in r.get("scores", {})))
    _csv(folder / "ranking.csv", ["rank", "backbone", "layer", "dim", *names, *(f"{n}_spread" for n in names)],
         [[r.get("rank"), r.get("backbone"), r.get("layer"), r.get("dim"), *(r["scores"].get(n, "") for n in names),
           *(r.get("spread", {}).get(n, "") for n in names)] for r in rows])

    def cell(r: dict, n: str) -> str:
        if n not in r.get("scores", {}):
            return "<td>—</td>"
        spread = r.get("spread", {}).get(n)
        return f"<td class=num>{r['scores'][n]:.3g}" + (f" <span class=muted>± {spread:.2g}</span>" if spread else "") \
            + "</td>"

    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(f"<tr><td class=num>{r.get('rank', 0):.1f}</td><td>{html.escape(str(r.get('backbone')))}</td>"
                   f"<td>{html.escape(str(r.get('layer')))}</td><td class=num>{r.get('dim', '')}</td>"
                   f"{''.join(cell(r, n) for n in names)}</tr>" for r in rows)
    return (f"<section><h3>Which source? The ranking</h3><p class=muted>Transferability scores on the training "
            f"split's features, each ± its standard deviation over seeded 80% resamples; the rank is the mean of the "
            f"ranks under each score (1 is best).</p><table><tr><th>rank</th><th>backbone</th><th>layer</th>"
            f"<th>dim</th>{head}</tr>{body}</table></section>")


def _num(value, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "—"


def _search(run: Run, folder: Path) -> str:
    rows = (run.search or {}).get("candidates") or (run.auto or {}).get("trials") or []
    rows = [r for r in rows if isinstance(r.get("cv_score"), (int, float))]
    out = ["<section><h3>What was tried</h3>"]
    reason = (run.search or {}).get("reason") or (run.auto or {}).get("winner", {}).get("why")
    if reason:
        out.append(f"<p>{html.escape(reason)}</p>")
    if rows:
        _csv(folder / "candidates.csv", ["candidate", "cv_score", "cv_std"],
             [[r["candidate"], r["cv_score"], r.get("cv_std", "")] for r in rows])
        out.append(f"<div class=figs><img class=wide alt=\"candidates\" src=\"{figures.candidates(rows, f'best of {len(rows)} candidates')}\">")
        curve = _per_layer(rows)
        if curve:
            out.append(f"<img alt=\"per-layer probe\" src=\"{figures.layer_curve(*curve)}\">")
        out.append("</div>")
    stages = (run.auto or {}).get("stages") or []
    if stages:
        body = "".join(f"<tr><td>{html.escape(s['stage'])}</td><td class=num>{s.get('seconds', 0):.1f}</td>"
                       f"<td class=num>{s.get('trials', 0)}</td><td>{html.escape('; '.join(s.get('notes') or []))}</td></tr>"
                       for s in stages)
        out.append(f"<table><tr><th>stage</th><th>seconds</th><th>trials</th><th>notes</th></tr>{body}</table>")
    return "".join(out) + "</section>"


def _per_layer(rows: list[dict]) -> tuple[list, list, list] | None:
    """Each single layer's best cross-validated score (no fusion, no selection), in first-seen order."""
    best: dict[str, dict] = {}
    for r in rows:
        layers = r.get("layers") if "layers" in r else (r.get("recipe") or {}).get("layers")
        fusion = r.get("fusion") if "fusion" in r else (r.get("recipe") or {}).get("fusion")
        select = r.get("select") if "select" in r else (r.get("recipe") or {}).get("select")
        if layers and len(layers) == 1 and not fusion and not select:
            name = layers[0]
            if name not in best or r["cv_score"] > best[name]["cv_score"]:
                best[name] = r
    if len(best) < 2:
        return None
    return list(best), [r["cv_score"] for r in best.values()], [r.get("cv_std", 0) for r in best.values()]


# -- several runs ------------------------------------------------------------------------------------

def _comparison(runs: list[Run], labels: list[str], intervals: list[dict]) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in METRICS)
    body = []
    for run, label, ci in zip(runs, labels, intervals):
        cells = []
        for key, _ in METRICS:
            value = run.metrics.get(key)
            low, high = ci.get(key, (None, None))
            cells.append(f"<td class=num>{value:.3f}" + (f" <span class=muted>({low:.3f}–{high:.3f})</span>"
                                                          if low is not None else "") + "</td>"
                         if isinstance(value, (int, float)) else "<td>—</td>")
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    return (f"<h2>Side by side</h2><table><tr><th>run</th>{head}</tr>{''.join(body)}</table>"
            f"<p class=muted>95% bootstrap intervals over each run's own test split.</p>")


def _csv(path: Path, header: list, rows: list) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
