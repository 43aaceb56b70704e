"""Extraction engines: eager fp32, bf16 autocast, ONNX Runtime; their agreement and their cache keys."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import EXAMPLES
from transfuse.backbones import get_spec
from transfuse.data.images import decode_image
from transfuse.errors import DataError
from transfuse.extract import FeatureExtractor, extract_features
from transfuse.pipeline import load_model, read_config
from transfuse.runtime import CHECKS_FILE, plan, worst_cosine
from transfuse.workflow import fit_source

LITE0 = get_spec("efficientnet_lite0")
TAPS = "blocks.2,blocks.4,features"


def paths(n: int = 16) -> list[str]:
    return [str(p) for p in sorted(EXAMPLES.glob("*/*.png"))[::300 // n][:n]]


def cosine(a, b) -> float:
    return worst_cosine({"x": torch.from_numpy(a.X)}, {"x": torch.from_numpy(b.X)})


def engine(p) -> tuple[str, str]:
    return p.runtime, p.precision


def measured(**found):
    return lambda candidates: {c: found[f"{c[0]}_{c[1]}"] for c in candidates if f"{c[0]}_{c[1]}" in found}


def test_plan_auto_prefers_bf16_that_agrees_then_onnx_then_eager(monkeypatch):
    monkeypatch.setattr("transfuse.runtime.native_bf16", lambda device: True)
    good = measured(torch_bf16=(0.998, None), onnx_fp32=(1.0, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", good)) == ("torch", "bf16")
    bad_bf16 = measured(torch_bf16=(0.95, None), onnx_fp32=(1.0, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", bad_bf16)) == ("onnx", "fp32")
    nothing = measured(torch_bf16=(0.95, None), onnx_fp32=(0.9, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", nothing)) == ("torch", "fp32")
    assert engine(plan(LITE0, "torch", "fp32", "cpu", measured())) == ("torch", "fp32")
    monkeypatch.setattr("transfuse.runtime.native_bf16", lambda device: False)  # emulated bf16 is slow
    assert engine(plan(LITE0, "auto", "auto", "cpu", good)) == ("onnx", "fp32")
    assert engine(plan(replace(LITE0, modality="text"), "auto", "auto", "cpu", good)) == ("torch", "fp32")


def test_plan_rejects_what_cannot_run():
    calls = measured()
    with pytest.raises(DataError, match="unknown runtime 'tensorrt'"):
        plan(LITE0, "tensorrt", "auto", "cpu", calls)
    with pytest.raises(DataError, match="unknown precision 'fp16'"):
        plan(LITE0, "auto", "fp16", "cpu", calls)
    with pytest.raises(DataError, match="use --runtime torch for bf16"):
        plan(LITE0, "onnx", "bf16", "cpu", calls)
    with pytest.raises(DataError, match="on the CPU"):
        plan(LITE0, "onnx", "fp32", "cuda", calls)
    with pytest.raises(DataError, match="cannot run on onnx"):
        plan(get_spec("use_multilingual"), "onnx", "auto", "cpu", calls)
    assert engine(plan(get_spec("use_multilingual"), "auto", "auto", "cpu", calls)) == ("native", "fp32")


def test_uint8_batches_give_the_timm_transform_exactly():
    spec = LITE0.input_spec
    files = paths(4)
    expected = torch.stack([spec.transform()(decode_image(p)) for p in files])
    pixels = torch.stack([torch.from_numpy(np.array(spec.geometry()(decode_image(p)))) for p in files])
    assert torch.equal(spec.normalize(pixels), expected)


def test_onnx_agrees_with_eager_and_is_exported_once(cache_dir):
    files = paths()
    eager = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    onnx = extract_features(files, layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    assert onnx.engine.runtime == "onnx" and onnx.n_extracted == len(files)  # its own cache key
    assert cosine(eager, onnx) >= 0.999
    exported = sorted(Path(cache_dir, "onnx").glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    checks = json.loads(Path(cache_dir, CHECKS_FILE).read_text())
    assert any("onnx-fp32" in record for record in checks.values())
    again = extract_features(paths(20), layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    assert again.n_extracted > 0 and again.engine.onnx_file == str(exported[0])
    assert exported[0].stat().st_mtime_ns == stamp  # remembered, not exported again
    exported[0].write_bytes(b"not a graph")  # a broken export is exported again, not an error
    fresh = extract_features(files[:4], layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    np.testing.assert_allclose(fresh.X, onnx.X[:4], rtol=1e-4, atol=1e-4)


def test_bf16_agrees_and_never_shares_the_fp32_cache(cache_dir):
    files = paths()
    eager = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    bf16 = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="bf16", progress=False)
    assert bf16.n_extracted == len(files) and bf16.engine.precision == "bf16"
    assert 0.99 <= cosine(eager, bf16) < 1.0  # close, and really computed in bf16
    hit = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    assert hit.n_extracted == 0 and np.array_equal(hit.X, eager.X)


def test_text_encoder_through_onnx_and_bf16(cache_dir):
    texts = ["A soft knit sweater, true to size.", "The zipper broke after one wash and the seams are loose " * 30,
             "Lovely dress"]
    kw = dict(backbone="minilm_l6", layers="layer.3,features", cache=cache_dir, progress=False, long_text="chunk")
    eager = extract_features(texts, runtime="torch", precision="fp32", **kw)
    assert cosine(eager, extract_features(texts, runtime="onnx", **kw)) >= 0.999
    assert cosine(eager, extract_features(texts, runtime="torch", precision="bf16", **kw)) >= 0.99


def test_saved_model_keeps_its_engine_and_old_models_load_as_eager_fp32(tmp_path, image_folder, cache_dir):
    from transfuse.data import load_source

    res = fit_source(load_source(image_folder), out_dir=tmp_path / "m", cache=cache_dir, runtime="onnx")
    config = read_config(tmp_path / "m")
    assert config["extractor"]["runtime"] == "onnx"
    assert res.metrics["extraction"]["efficientnet_lite0"].startswith("onnx fp32")
    assert load_model(tmp_path / "m").named_steps["features"].runtime == "onnx"
    for key in ("runtime", "precision"):
        del config["extractor"][key]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    old = load_model(tmp_path / "m").named_steps["features"]
    assert (old.runtime, old.precision) == ("torch", "fp32")


def test_extractor_rejects_unknown_engine_names():
    with pytest.raises(DataError, match="unknown runtime"):
        FeatureExtractor(runtime="tpu").fit(paths(2))
