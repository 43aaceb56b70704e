"""``transfuse export``: a saved model as one ONNX graph, input to class probabilities.

Each part kind has an exporter, declared in a module's ``EXPORTS = ((kind, function), ...)``: the
built-in modules below, then the entry-point group ``transfuse.exports`` (so a plugin's part kind
brings its own export). An exporter takes the :class:`~transfuse.export.graph.Graph`, the loaded
part and the name of the tensor before it, adds its operators from the part's saved state and
returns the name of its output. The pieces are composed in the model's order into one graph, which
is checked against transfuse's own prediction before it is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from transfuse.errors import DataError
from transfuse.export.runtime import modality_of
from transfuse.plugins import declared

BUILTIN_MODULES = ("transfuse.export.featurizer", "transfuse.export.steps", "transfuse.export.heads",
                   "transfuse.export.finetuned", "transfuse.export.ensemble")
ENTRY_POINTS = "transfuse.exports"
CHECK_ITEMS = 4
TOLERANCE = 1e-3  # probabilities (or scores) from the graph and from transfuse in fp32: a wrong graph is far off
REFUSED = {"tfidf": "TF-IDF features are a vocabulary lookup on raw text, which ONNX graphs do not take as input",
           "sklearn": "a scikit-learn classifier of your own has no exporter; use one of transfuse's heads"}


@contextlib.contextmanager
def quiet(level: int):
    """Log records at ``level`` and below dropped for the block (the quantiser's and the check's chatter)."""
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@functools.cache
def exporters() -> dict:
    """``{part kind: exporter}`` of the built-in modules and plugins (the first declaration wins)."""
    table: dict = {}
    for kind, function in declared("EXPORTS", BUILTIN_MODULES, ENTRY_POINTS):
        table.setdefault(kind, function)
    return table


@dataclass
class Exported:
    """What ``export_model`` wrote: the ONNX file, the JSON beside it, and the metadata."""

    path: Path
    sidecar: Path
    metadata: dict


def export_model(model_dir: str | Path, out: str | Path, opset: int | None = None) -> Exported:
    """Write the model in ``model_dir`` as one ONNX graph to ``out`` (and ``out`` with ``.json``
    beside it: classes, input, preprocessing, metrics). Raises DataError naming the first part that
    has no export.

    >>> export_model("transfuse-models/fashion", "fashion.onnx").path  # doctest: +SKIP
    PosixPath('fashion.onnx')
    """
    try:
        import onnx
    except ImportError:
        raise DataError("transfuse export needs the onnx package: pip install 'transfuse[onnx]'") from None

    from transfuse.export.graph import OPSET, Graph
    from transfuse.modeldir import load_parts

    parts, _ = load_parts(model_dir)
    table = exporters()
    for _, part in parts:
        if part.kind in REFUSED:
            raise DataError(f"cannot export a model with a {part.kind} part: {REFUSED[part.kind]}")
        if part.kind not in table:
            raise DataError(f"cannot export a model with a {part.kind} part yet; parts that export: "
                            f"{', '.join(sorted(table))}")
    graph = Graph(opset or OPSET)
    x = features = None
    for _, part in parts:
        features = x if part.role == "head" else None  # what the head reads: checked on its own too
        x = table[part.kind](graph, part, x)
    classes = [str(c) for c in parts[-1][1].classes_]
    output = graph.output
    if graph.image_inputs:
        graph.metadata["inputs"] = graph.image_inputs
        if len(graph.image_inputs) == 1:  # the one input's preprocessing at the top level too
            graph.metadata.update({k: str(v) for k, v in graph.image_inputs["pixels"].items()})
    meta = {"transfuse_export": "1", "classes": classes, "output": output,
            "preprocessing": _preprocessing(graph.metadata), **graph.metadata, "metrics": _metrics(Path(model_dir))}
    graph.metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    label = graph.op("ArgMax", [x], "label", axis=1, keepdims=0)
    model = graph.model({output: (x, ["batch", len(classes)]), "label": (label, ["batch"])})
    onnx.checker.check_model(model, full_check=True)
    gap = verify(model, graph.files, Path(model_dir), meta, output, features, _eager_runtime(parts))
    what = {"text": "texts", "audio": "clips", "sequence": "sequences"}.get(modality_of(meta), "smooth random images")
    meta["checked"] = (f"max difference {gap:.2g} from transfuse (eager fp32) on {CHECK_ITEMS} {what}"
                       + (" (probabilities, and the head's input relative to its largest value)" if features else ""))
    model.metadata_props.add(key="checked", value=meta["checked"])
    out = Path(out)
    _write(model, graph.files, out)
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return Exported(out, sidecar, meta)


def _eager_runtime(parts: list) -> str:
    """The engine of the check's reference: eager torch, or ``auto`` when a frozen encoder runs only
    on its own (native) engine."""
    from transfuse.backbones import get_spec
    from transfuse.engines.planner import capabilities
    from transfuse.featurizers.extractor import backbone_list

    names = [n for _, part in parts if getattr(part, "backbone", None) for n in backbone_list(part.backbone)]
    return "torch" if all("torch" in capabilities(get_spec(n))[0] for n in names) else "auto"


def _preprocessing(meta: dict) -> str:
    modality = modality_of(meta)
    if modality == "text":
        return (f"texts tokenised with {meta['tokenizer']} (beside the graph) without special tokens, cut to "
                f"{meta['max_tokens']} tokens with the special ids {meta['specials']} around them, right-padded with "
                f"id {meta['pad_id']}; input_ids and attention_mask, int64 (N, T)")
    if modality == "sequence":
        return (f"one sequence per run: its frames as saved (.npy, or one item of an .npz array file), float32, "
                f"{meta['width']} values per frame; frames (1, T, {meta['width']}); normalised inside the graph")
    if modality == "audio":
        return (f"one clip per run, any length: mono (channels averaged), resampled to {meta['sample_rate']} Hz, "
                f"float32 in [-1, 1]; waveform (1, S)")
    described = []
    for name, prep in meta.get("inputs", {}).items():
        size, crop = prep["image_size"], prep["crop_pct"]
        described.append(f"{name}: RGB; resize the short side to {int(size // crop)} px ({prep['interpolation']}), "
                         f"centre-crop {size}x{size}, scale to [0, 1], channels first (N, 3, {size}, {size})")
    return "; ".join(described) + ("; the backbones' mean and std are applied inside the graph" if described else "")


def _metrics(model_dir: Path) -> dict:
    path = model_dir / "metrics.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: saved[k] for k in ("accuracy", "balanced_accuracy", "macro_f1") if k in saved}


def beside(graph_file: Path, name: str) -> Path:
    """Where a file the graph reads lives: ``model.onnx`` reads ``model.tokenizer.json``."""
    return graph_file.with_name(f"{graph_file.stem}.{name}")


def _write(model, files: dict[str, str], out: Path) -> None:
    """The graph (written beside and renamed: a killed export leaves no half file) and its files."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    try:
        onnx.save(model, str(partial))
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    for name, text in files.items():  # named after the graph: two exports in one folder keep their own
        beside(out, name).write_text(text)


CHECK_TEXTS = ["a", "The delivery was quick and the dress fits well.", "Terrible: it tore after one wash!! 0/10",
               " ".join(["long"] * 600)]  # longer than any window: cut the same way


def verify(model, files: dict[str, str], model_dir: Path, meta: dict, output: str, features: str | None,
           runtime: str = "torch", seed: int = 0) -> float:
    """Run the graph (as :class:`~transfuse.export.runtime.ExportedModel` reads it) and transfuse
    (eager fp32, no cache) on :data:`CHECK_ITEMS` smooth random images already at the resize scale (so
    both see the same pixels after the crop), on :data:`CHECK_TEXTS`, or on :func:`check_clips`
    (one clip per run, as the runtime feeds them); the largest difference of
    their outputs, and of the head's input (``features``, the graph's tensor of that name) relative to
    its scale: probabilities of odd inputs are often saturated and would hide a wrong graph. Raises
    DataError above :data:`TOLERANCE`: a graph that disagrees is not written."""
    import tempfile

    import numpy as np
    import onnx
    from PIL import Image

    from transfuse.export.runtime import ExportedModel

    tmp_dir = tempfile.TemporaryDirectory()
    modality = modality_of(meta)
    if modality == "text":
        items = CHECK_TEXTS
    elif modality == "audio":
        items = check_clips(Path(tmp_dir.name), seed)
    elif modality == "sequence":
        items = check_sequences(Path(tmp_dir.name), int(meta["width"]), seed)
    else:  # 6x6 random colours resized smoothly: shapes and edges, not noise a network maps to one class
        scale = max(int(p["image_size"] // p["crop_pct"]) for p in meta["inputs"].values())
        rng = np.random.default_rng(seed)
        items = [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((scale, scale),
                                                                                         Image.BILINEAR)
                 for _ in range(CHECK_ITEMS)]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = [output] if features is None else [output, features]
    if features is not None:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(features, onnx.TensorProto.FLOAT, None))
    with tmp_dir as tmp:
        _write(probe, files, Path(tmp) / "check.onnx")
        exported = ExportedModel(Path(tmp) / "check.onnx")
        got = exported.run([exported.prepare(item) for item in items], outputs)
        result = _reference(model_dir, items, output, features, runtime)
    return _gap(got, *result, len(items))


def check_clips(folder: Path, seed: int = 0) -> list[str]:
    """:data:`CHECK_ITEMS` WAV files that exercise the audio path: shorter than any encoder's window,
    stereo at another rate, a noise burst, a longer tone sweep."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    rate = 22050
    t = np.arange(3 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t[:rate])
    clips = {"click.wav": (rng.normal(0, 0.3, 200), 16000),
             "stereo.wav": (np.stack([tone, -0.5 * tone], 1), 44100),
             "noise.wav": (rng.normal(0, 0.1, rate) * np.exp(-np.arange(rate) / 4000), rate),
             "sweep.wav": (0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t), rate)}
    paths = []
    for name, (wave, sr) in list(clips.items())[:CHECK_ITEMS]:
        sf.write(folder / name, wave.astype(np.float32), sr)
        paths.append(str(folder / name))
    return paths


def check_sequences(folder: Path, width: int, seed: int = 0) -> list[str]:
    """:data:`CHECK_ITEMS` ``.npy`` sequences of ``width`` values per frame: one frame, a few, a
    smooth long one, and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 6, 120)[:, None]
    arrays = [rng.normal(size=(1, width)), rng.normal(size=(4, width)),
              np.sin(t * (1 + np.arange(width))[None] / width) * 3, rng.normal(2, 5, size=(300, width))]
    paths = []
    for i, frames in enumerate(arrays[:CHECK_ITEMS]):
        np.save(folder / f"check{i}.npy", frames.astype(np.float32))
        paths.append(str(folder / f"check{i}.npy"))
    return paths


def _reference(model_dir: Path, items: list, output: str, features: str | None, runtime: str):
    """transfuse's own outputs on the check items (eager fp32, no cache), and the head's input."""
    import numpy as np

    from transfuse.pipeline import load_model

    want_features = None
    reference = load_model(model_dir, runtime=runtime, precision="fp32", cache=False)
    with quiet(logging.INFO):  # the reference's extraction lines are not the user's business
        if features is None:  # a whole network (fine-tuned, ensemble): items in, probabilities out
            want = np.asarray(reference.predict_proba(items))
        else:  # the steps before the head once, then the head on their output
            from sklearn.pipeline import Pipeline

            want_features = np.asarray(Pipeline(reference.steps[:-1]).transform(items), np.float64)
            head = reference.steps[-1][1]
            want = np.asarray(head.predict_proba(want_features) if output == "probabilities"
                              else head.decision_function(want_features))
    if want.ndim == 1:  # one score for two classes
        want = np.column_stack([-want, want])
    return want, want_features


def _gap(got: list, want, want_features, n_items: int) -> float:
    import numpy as np

    gap = float(np.abs(got[0] - want).max())
    if want_features is not None:
        scale = max(float(np.abs(want_features).max()), 1e-12)
        gap = max(gap, float(np.abs(got[1] - want_features).max()) / scale)
    if not gap <= TOLERANCE:
        raise DataError(f"the exported graph disagrees with transfuse by {gap:.3g} (more than {TOLERANCE}) on "
                        f"{n_items} check items; nothing was written. Please report this with the model's "
                        f"config.json")
    return gap
