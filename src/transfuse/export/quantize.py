"""int8 versions of an exported graph with ONNX Runtime's quantisation: static (QDQ, per-channel
weights, activations calibrated on a sample of the model's own training items, each activation's
range set at its 99.9th percentile) for image graphs,
dynamic (weights int8, activations quantised as they come) for text and audio graphs. The accuracy is measured
on the labelled items the model was not trained on, before and after; a drop beyond ``max_drop``
writes nothing."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfuse.data.source import Source
from transfuse.errors import DataError
from transfuse.export import beside, quiet
from transfuse.export.runtime import ExportedModel

log = logging.getLogger(__name__)
CALIBRATION_ITEMS = 64
CALIBRATION_PERCENTILE = 99.9
MAX_DROP = 0.02  # the accuracy int8 may cost by default (2 points: a few items of a small test split)


@dataclass
class Quantized:
    """The int8 file and what it cost: accuracy before and after on ``n_test`` unseen items."""

    path: Path
    method: str
    fp32_accuracy: float
    int8_accuracy: float
    n_test: int
    n_calibration: int

    @property
    def drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy


def held_out(model_dir: Path, source: Source, seed: int = 0) -> tuple[list, list, list]:
    """``(calibration items, test items, test labels)``: a seeded sample of the items the model was
    trained on (its saved digests say which), and every labelled item it was not."""
    from transfuse.workflow import trained_on

    seen = trained_on(model_dir, source.items, source.kind)
    if seen is None:
        raise DataError(f"{model_dir} does not record which items it was trained on, so the quantised model's "
                        f"accuracy cannot be measured on unseen ones; fit it again with this version")
    if not seen.any() or seen.all():
        raise DataError(f"--data must hold the items {model_dir} was trained on (to calibrate) and others (to "
                        f"measure); of its {len(seen)} items {int(seen.sum())} were trained on")
    rng = np.random.default_rng(seed)
    calibration = rng.permutation(np.flatnonzero(seen))[:CALIBRATION_ITEMS]
    test = np.flatnonzero(~seen)
    return [source.items[i] for i in calibration], [source.items[i] for i in test], \
        [str(source.labels[i]) for i in test]


def quantize_int8(fp32: Path, out: Path, model_dir: Path, source: Source, max_drop: float = MAX_DROP) -> Quantized:
    """Write the int8 version of the exported graph ``fp32`` to ``out`` (see the module docstring)."""
    import onnx
    from onnx import helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    exported = ExportedModel(fp32)
    if exported.modality != source.kind:
        raise DataError(f"the model reads {exported.modality} but --data holds {source.kind}")
    calibration, test, truth = held_out(model_dir, source)
    ok, _ = exported.scores(test)  # unreadable files are left out of both measures (and said so)
    if not ok.all():
        log.warning("%d of the %d unseen items could not be read; measuring on the others", (~ok).sum(), len(ok))
        test, truth = [t for t, good in zip(test, ok) if good], [t for t, good in zip(truth, ok) if good]
    if exported.modality == "image":
        calibration = [item for item, good in zip(calibration, exported.scores(calibration)[0]) if good]
    fp32_acc = float(np.mean(exported.predict(test).astype(str) == np.asarray(truth)))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([exported.feeds([exported.pixels(item)]) for item in calibration])

        def get_next(self):
            return next(self.batches, None)

    # it logs every rescaled weight, and prints its calibration steps
    with tempfile.TemporaryDirectory() as tmp, quiet(logging.WARNING), contextlib.redirect_stdout(io.StringIO()):
        staged, prepared = Path(tmp) / out.name, Path(tmp) / "prepared.onnx"
        try:  # shapes inferred and the graph simplified first, as ONNX Runtime advises
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=exported.modality != "image")
        except Exception as exc:  # noqa: BLE001  (an optional step: quantise the graph as it is)
            log.debug("pre-processing for quantisation skipped: %s", exc)
            shutil.copy(fp32, prepared)
        if exported.modality == "image":
            method = "static (QDQ, per-channel int8 weights, activations calibrated on training items)"
            # ranges at the 99.9th percentile, not the extremes: Lite0 + logreg on Fashion-MNIST lost 4.7
            # points with min-max ranges, 2.0 at 99.99 and 0.3 at 99.9 (benchmarks/export.py)
            quantize_static(str(prepared), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
        else:
            method = "dynamic (int8 weights)"
            quantize_dynamic(str(prepared), str(staged), weight_type=QuantType.QInt8)
        model = onnx.load(str(staged))
        props = dict(exported.session.get_modelmeta().custom_metadata_map)  # as written, strings
        props["quantized"] = method
        del model.metadata_props[:]
        helper.set_model_props(model, props)
        onnx.save(model, str(staged))
        for name in ("tokenizer.json",):  # what the graph reads beside it
            if beside(fp32, name).is_file():
                shutil.copy(beside(fp32, name), beside(staged, name))
        int8_acc = float(np.mean(ExportedModel(staged).predict(test).astype(str) == np.asarray(truth)))
        result = Quantized(out, method, fp32_acc, int8_acc, len(test), len(calibration))
        if result.drop > max_drop:
            raise DataError(f"int8 costs {100 * result.drop:.1f} accuracy points on the {len(test)} unseen items "
                            f"({fp32_acc:.3f} -> {int8_acc:.3f}), more than --max-drop {max_drop}; nothing was "
                            f"written (raise --max-drop to keep it anyway)")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), out)
        for name in ("tokenizer.json",):
            if beside(staged, name).is_file():
                shutil.copy(beside(staged, name), beside(out, name))
    return result
