"""The report's figures, drawn with matplotlib (no pyplot: the user's backend is left alone) and
returned as inline PNG data URIs, so the page needs no other file."""

from __future__ import annotations

import base64
import io

import numpy as np

WIDTH = 5.2  # inches at DPI: about 570 px, two figures side by side on a laptop screen
DPI = 110


def _figure(height: float = 4.0, width: float = WIDTH):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    return fig, fig.subplots()


def data_uri(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion(cm: np.ndarray, classes: list[str], normalised: bool) -> str:
    """Rows: true class; columns: predicted. ``normalised``: each row divided by its count (recall on
    the diagonal)."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalised else cm
    size = min(5.6, 2.4 + 0.3 * len(classes))  # two side by side on a laptop screen
    fig, ax = _figure(size, size + 0.8)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalised else None)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("share of each true class" if normalised else "counts")
    if len(classes) <= 20:
        for (i, j), value in np.ndenumerate(shown):
            if cm[i, j]:
                ax.text(j, i, f"{value:.2f}" if normalised else f"{int(value)}", ha="center", va="center",
                        fontsize=7, color="white" if value > shown.max() / 2 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return data_uri(fig)


def reliability(bins: list[dict], ece: float) -> str:
    """Accuracy against mean confidence per bin (the diagonal is perfect calibration); bar widths are
    the bins, shading the share of items in each."""
    fig, ax = _figure(4.0, 4.4)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    total = sum(b["count"] for b in bins)
    for b in bins:
        ax.bar(b["low"], b["accuracy"], width=b["high"] - b["low"], align="edge", color="#4c72b0",
               alpha=0.25 + 0.75 * b["count"] / total, edgecolor="white")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="#c44e52",
            label="accuracy at that confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    return data_uri(fig)


def feature_map(points: dict, split: str) -> str:
    """The 2-D map of one split's features, one colour per class (at most 20 named in the legend)."""
    keep = points["split"] == split
    labels = points["label"][keep]
    x, y = points["x"][keep], points["y"][keep]
    fig, ax = _figure(4.2, WIDTH + 1.0)
    classes = sorted(set(labels))
    from matplotlib import colormaps

    colours = colormaps["tab20" if len(classes) > 10 else "tab10"]
    size = 12 if len(x) < 500 else 5 if len(x) < 5000 else 2
    for i, cls in enumerate(classes):
        mine = labels == cls
        ax.scatter(x[mine], y[mine], s=size, color=colours(i % colours.N), label=_legend(cls) if i < 20 else None,
                   alpha=0.8, linewidths=0)
    ax.set_title(f"{split} split ({len(x)} items)")
    ax.set_xticks([])
    ax.set_yticks([])
    if classes:  # beside the map, not over its points
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  ncol=1 if len(classes) <= 12 else 2)
    return data_uri(fig)


def candidates(rows: list[dict], title: str, top: int = 20) -> str:
    """Cross-validated score of the best ``top`` candidates (error bars: the spread over folds)."""
    rows = sorted(rows, key=lambda r: -r["cv_score"])[:top][::-1]
    fig, ax = _figure(1.2 + 0.28 * len(rows), WIDTH * 1.6)
    ax.barh(range(len(rows)), [r["cv_score"] for r in rows], xerr=[r.get("cv_std", 0) for r in rows],
            color="#4c72b0", error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
    ax.set_yticks(range(len(rows)), [_short(r["candidate"]) for r in rows], fontsize=7)
    low = min(r["cv_score"] - r.get("cv_std", 0) for r in rows)
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_xlabel("cross-validated score (training split)")
    ax.set_title(title)
    return data_uri(fig)


def layer_curve(layers: list[str], scores: list[float], spreads: list[float]) -> str:
    """The per-layer probe: each layer alone, in the network's order."""
    fig, ax = _figure(3.4)
    ax.errorbar(range(len(layers)), scores, yerr=spreads, marker="o", capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("cross-validated score")
    ax.set_title("each layer alone (best head setting)")
    return data_uri(fig)


def _legend(name: str) -> str:
    """A class name as a legend shows it: matplotlib hides labels starting with ``_`` and reads ``$`` as
    mathematics."""
    name = name.replace("$", r"\$")
    return "\u200b" + name if name.startswith("_") else name


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def training_curves(curves: dict) -> str:
    """Fine-tuning per epoch: losses (training, validation) and validation accuracy, with the number
    of trainable parameter groups as a step line where it changes."""
    from matplotlib.figure import Figure

    epochs = curves["epoch"]
    fig = Figure(figsize=(WIDTH * 1.6, 3.4), dpi=DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key, label in (("train_loss", "training"), ("val_loss", "validation")):
        loss_ax.plot(epochs, curves[key], marker="o", markersize=3, label=label)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8)
    acc_ax.plot(epochs, curves["val_acc"], marker="o", markersize=3, color="#55a868", label="validation accuracy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    groups = curves.get("trainable_groups") or []
    if any(g == g for g in groups) and len({g for g in groups if g == g}) > 1:  # NaN != NaN
        twin = acc_ax.twinx()
        twin.step(epochs, groups, where="mid", color="0.5", linestyle=":", label="trainable groups")
        twin.set_ylabel("trainable groups", color="0.4")
    acc_ax.legend(fontsize=8, loc="lower right")
    return data_uri(fig)


def method_bars(names: list[str], values: list[float], lows: list[float], highs: list[float]) -> str:
    """Test accuracy per method with its 95% bootstrap interval."""
    fig, ax = _figure(1.0 + 0.45 * len(names), WIDTH * 1.4)
    y = np.arange(len(names))[::-1]
    err = [np.subtract(values, lows), np.subtract(highs, values)]
    colours = ["#c44e52" if "scratch" in n else "#4c72b0" for n in names]
    ax.barh(y, values, xerr=err, color=colours, error_kw={"elinewidth": 0.9, "ecolor": "0.2", "capsize": 3})
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy (95% bootstrap interval)")
    return data_uri(fig)
