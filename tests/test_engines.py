"""Extraction engines: eager fp32, bf16 autocast, compiled packages, ONNX Runtime; their agreement and cache keys."""

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from transfuse.backbones import get_spec
from transfuse.data.images import decode_image
from transfuse.engines import (
    CHECKS_FILE,
    COMPILE_MIN_ITEMS,
    EngineStore,
    compile_id,
    compile_pays,
    hardware,
    package_built,
    plan,
    runners,
    worst_cosine,
)
from transfuse.errors import DataError
from transfuse.extract import extract_features
from transfuse.featurizers import FeatureExtractor
from transfuse.pipeline import load_model, read_config
from transfuse.workflow import fit_source

from conftest import EXAMPLES, cli

LITE0 = get_spec("efficientnet_lite0")
needs_compiler = pytest.mark.skipif(hardware.compiler_missing("cpu") is not None,
                                    reason="--runtime compile needs g++ (./scripts/install-data.sh installs it)")
TAPS = "blocks.2,blocks.4,features"


def paths(n: int = 16) -> list[str]:
    return [str(p) for p in sorted(EXAMPLES.glob("*/*.png"))[::300 // n][:n]]


def cosine(a, b) -> float:
    return worst_cosine({"x": torch.from_numpy(a.X)}, {"x": torch.from_numpy(b.X)})


def engine(p) -> tuple[str, str]:
    return p.runtime, p.precision


def measured(**found):
    return lambda candidates, retry=False: {c: (*found[f"{c[0]}_{c[1]}"], None) for c in candidates
                                            if f"{c[0]}_{c[1]}" in found}


def test_plan_auto_prefers_bf16_that_agrees_then_onnx_then_eager(monkeypatch):
    monkeypatch.setattr("transfuse.engines.planner.native_bf16", lambda device: True)
    good = measured(torch_bf16=(0.998, None), onnx_fp32=(1.0, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", good)) == ("torch", "bf16")
    bad_bf16 = measured(torch_bf16=(0.95, None), onnx_fp32=(1.0, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", bad_bf16)) == ("onnx", "fp32")
    nothing = measured(torch_bf16=(0.95, None), onnx_fp32=(0.9, "g.onnx"))
    assert engine(plan(LITE0, "auto", "auto", "cpu", nothing)) == ("torch", "fp32")
    assert engine(plan(LITE0, "torch", "fp32", "cpu", measured())) == ("torch", "fp32")
    monkeypatch.setattr("transfuse.engines.planner.native_bf16", lambda device: False)  # emulated bf16 is slow
    assert engine(plan(LITE0, "auto", "auto", "cpu", good)) == ("onnx", "fp32")
    assert engine(plan(replace(LITE0, modality="text"), "auto", "auto", "cpu", good)) == ("torch", "fp32")


def test_plan_compiles_only_where_it_pays(monkeypatch):
    monkeypatch.setattr("transfuse.engines.planner.native_bf16", lambda device: True)
    monkeypatch.setattr("transfuse.engines.planner.compiler_missing", lambda device: None)
    found = measured(compile_bf16=(0.995, "p.pt2"), torch_bf16=(0.998, None))
    always = lambda precision: True  # noqa: E731
    assert engine(plan(LITE0, "auto", "auto", "cpu", found)) == ("torch", "bf16")  # small job, no package yet
    assert engine(plan(LITE0, "auto", "auto", "cpu", found, compile_worth=always)) == ("compile", "bf16")
    assert plan(LITE0, "auto", "auto", "cpu", found, compile_worth=always).file == "p.pt2"
    failed = measured(compile_bf16=(None, None), torch_bf16=(0.998, None))  # the compile failed: eager bf16
    assert engine(plan(LITE0, "auto", "auto", "cpu", failed, compile_worth=always)) == ("torch", "bf16")
    assert engine(plan(LITE0, "auto", "auto", "cuda", found, compile_worth=always)) == ("torch", "bf16")  # unmeasured
    worse = measured(compile_bf16=(0.95, "p.pt2"), compile_fp32=(0.9999, "q.pt2"))
    assert engine(plan(LITE0, "compile", "auto", "cpu", worse)) == ("compile", "fp32")
    with pytest.raises(DataError, match="could not be compiled"):
        plan(LITE0, "compile", "auto", "cpu", measured(compile_bf16=(None, None), compile_fp32=(None, None)))
    assert compile_pays(10, 10, True) and compile_pays(COMPILE_MIN_ITEMS, COMPILE_MIN_ITEMS, False)
    assert not compile_pays(10, 10, False)  # a small job does not earn the build back
    assert not compile_pays(COMPILE_MIN_ITEMS, 0, True)  # never throw a warm cache away
    monkeypatch.setattr("transfuse.engines.planner.compiler_missing", lambda device: "no C++ compiler found")
    with pytest.raises(DataError, match="no C\\+\\+ compiler found; or use --runtime torch"):
        plan(LITE0, "compile", "auto", "cpu", found)
    assert engine(plan(LITE0, "auto", "auto", "cpu", found, compile_worth=always)) == ("torch", "bf16")
    with pytest.raises(DataError, match="cannot run on compile"):
        plan(get_spec("sound_effects"), "compile", "auto", "cpu", found)
    monkeypatch.undo()
    with pytest.raises(DataError, match="runs on cpu and cuda devices here, not mps"):
        plan(LITE0, "compile", "fp32", "mps", found)


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


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vgg16", "tiny_cnn"])
def test_the_torch_free_resize_and_crop_is_timms_pixel_for_pixel(name):
    from PIL import Image

    from transfuse.engines.onnx_images import resize_and_crop

    spec = get_spec(name).input_spec
    rng = np.random.default_rng(0)
    for w, h in [(28, 28), (300, 200), (97, 411), (224, 224), (640, 480)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
        ours = np.asarray(resize_and_crop(img, spec.size, spec.crop_pct, spec.interpolation))
        assert np.array_equal(ours, np.asarray(spec.geometry()(img))), (name, w, h)


def test_the_torch_free_onnx_path_gives_the_backbones_features(cache_dir, monkeypatch):
    import transfuse.extract.job as extract

    files = paths(6)
    for pooling in ("avg", "avgmax", "gem"):
        free = extract_features(files, layers=TAPS, pooling=pooling, cache=False, runtime="onnx", progress=False)
        with monkeypatch.context() as m:
            m.setattr(extract, "serves", lambda *a: False)  # the built backbone's batches and pooling
            built = extract_features(files, layers=TAPS, pooling=pooling, cache=False, runtime="onnx", progress=False)
        np.testing.assert_allclose(free.X, built.X, rtol=1e-5, atol=1e-5)
    workers = extract_features(files, layers=TAPS, pooling="gem", cache=False, runtime="onnx", num_workers=1,
                               progress=False)
    assert np.array_equal(workers.X, free.X)  # decoded in a DataLoader worker: the same rows, bit for bit


def test_onnx_agrees_with_eager_and_is_exported_once(cache_dir):
    files = paths()
    eager = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    onnx = extract_features(files, layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    assert onnx.engine.runtime == "onnx" and onnx.n_extracted == len(files)  # its own cache key
    assert cosine(eager, onnx) >= 0.999
    exported = sorted(Path(cache_dir, "onnx").glob("*.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_ino
    checks = json.loads(Path(cache_dir, CHECKS_FILE).read_text())
    assert any("onnx-fp32" in record for record in checks.values())
    again = extract_features(files + paths(20)[-2:], layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    assert again.n_extracted > 0 and again.engine.file == str(exported[0])
    assert exported[0].stat().st_ino == stamp  # remembered, not exported again
    runners._LOADED.clear()  # as in a new process
    exported[0].write_bytes(b"not a graph")  # a broken export is exported again, not an error
    more = list(dict.fromkeys(files + paths(24)))
    fresh = extract_features(more, layers=TAPS, cache=cache_dir, runtime="onnx", progress=False)
    assert fresh.n_extracted > 0 and exported[0].stat().st_size > 1_000_000
    np.testing.assert_allclose(fresh.X[: len(files)], onnx.X, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_compiler
def test_compiled_package_agrees_and_is_built_once_for_every_tap(cache_dir):
    files = paths()
    eager = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    compiled = extract_features(files, layers=TAPS, cache=cache_dir, runtime="compile", precision="fp32",
                                progress=False)
    assert engine(compiled.engine) == ("compile", "fp32") and compiled.n_extracted == len(files)  # its own key
    assert cosine(eager, compiled) >= 0.999
    package = Path(compiled.engine.file)
    assert package.parent == Path(cache_dir, "compiled") and package.suffix == ".pt2"
    stamp = package.stat().st_ino  # a rebuild is a new file (loading marks it used: mtime moves)
    runners._LOADED.clear()  # as in a new process
    # other layers use the same package (it has every tap), and auto takes it once it exists
    other = extract_features(files, layers="blocks.1,logits", cache=cache_dir, precision="fp32", progress=False)
    assert engine(other.engine) == ("compile", "fp32") and other.engine.file == str(package)
    assert package.stat().st_ino == stamp
    store = EngineStore(cache_dir)
    assert package in store.files()
    store.prune(everything=True)
    assert not package.exists() and store.files() == []


@pytest.mark.slow
@needs_compiler
def test_compiled_engine_is_retried_kept_to_this_machine_rebuilt_when_broken_and_never_wastes_the_cache(
        cache_dir, monkeypatch):
    files = paths(20)
    kw = dict(backbone="tiny_cnn", cache=cache_dir, precision="fp32", progress=False)
    seeded = extract_features(files[10:16], **kw)  # auto without a package: cached under another engine's keys
    with monkeypatch.context() as patched:
        patched.setattr("transfuse.engines.calibrate.compile_network", lambda *a: (_ for _ in ()).throw(RuntimeError("no cc")))
        with pytest.raises(DataError, match="could not be compiled .*no cc.*use --runtime torch"):
            extract_features(files[:10], runtime="compile", **kw)
    built = extract_features(files[:10], runtime="compile", **kw)  # an explicit request retries the failed build
    package = Path(built.engine.file)
    stamp = package.stat().st_ino  # a rebuild is a new file (loading marks it used: mtime moves)
    # auto: what the eager engine has cached stays eager; new items go to the package that exists
    warm = extract_features(files[10:16], **kw)
    assert engine(warm.engine) == engine(seeded.engine) and warm.n_extracted == 0
    assert np.array_equal(warm.X, seeded.X)
    new = extract_features(files[16:], **kw)
    assert engine(new.engine) == ("compile", "fp32") and new.engine.file == str(package)
    # a remembered package of another machine (a shared cache folder) is not used
    checks_file = Path(cache_dir, CHECKS_FILE)
    checks = json.loads(checks_file.read_text())
    other = package.with_name("other-machine-fp32.pt2")
    shutil.copy(package, other)  # it loads: only its path says it is not this machine's
    for record in checks.values():
        if "compile-fp32" in record:
            record["compile-fp32"]["file"] = str(other)
    checks_file.write_text(json.dumps(checks))
    runners._LOADED.clear()
    again = extract_features(files[:10], runtime="compile", **kw)
    assert again.engine.file == str(package) and package.stat().st_ino == stamp  # checked, not rebuilt
    assert all(r["compile-fp32"]["file"] == str(package)
               for r in json.loads(checks_file.read_text()).values() if "compile-fp32" in r)
    # a broken package is built again
    runners._LOADED.clear()
    package.write_bytes(b"not a package")
    fixed = extract_features(files[:10], layers="blocks.1", runtime="compile", **kw)
    assert fixed.engine.file == str(package) and package.stat().st_size > 10_000
    assert cosine(extract_features(files[:10], layers="blocks.1", runtime="torch", **kw), fixed) >= 0.999


def test_saved_model_pinned_to_compile_predicts_eagerly_until_a_package_exists(cache_dir, monkeypatch, caplog):
    monkeypatch.setattr("transfuse.engines.planner.compiler_missing", lambda device: None)
    extractor = FeatureExtractor(backbone="tiny_cnn", engines={"tiny_cnn": "compile fp32"}, cache=cache_dir,
                                 precision="fp32")
    assert extractor._engine_for("tiny_cnn", "cpu") == ("torch", "fp32")  # no package here: no compile for this
    weights_id = get_spec("tiny_cnn").weights.id
    path = EngineStore(cache_dir).artifact_path(("compile", "fp32"), "", compile_id("tiny_cnn", weights_id, "cpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a broken package")
    assert package_built(EngineStore(cache_dir), "tiny_cnn", weights_id, "fp32", "cpu")
    assert extractor._engine_for("tiny_cnn", "cpu") == ("compile", "fp32")
    monkeypatch.setattr("transfuse.engines.calibrate.compile_network", lambda *a: (_ for _ in ()).throw(RuntimeError("no cc")))
    X = extractor.fit_transform(paths(6))  # the pinned engine cannot be rebuilt: another one, with a warning
    assert X.shape[0] == 6 and "could not be built here" in caplog.text
    assert extractor.engines_["tiny_cnn"] != "compile fp32"


def test_saved_model_pinned_to_compile_falls_back_without_a_compiler(monkeypatch, caplog):
    extractor = FeatureExtractor(engines={"efficientnet_lite0": "compile bf16"}, cache=False)
    monkeypatch.setattr("transfuse.engines.planner.compiler_missing", lambda device: None)
    assert extractor._engine_for("efficientnet_lite0", "cpu") == ("torch", "bf16")  # no package built here
    monkeypatch.setattr("transfuse.engines.planner.compiler_missing", lambda device: "no C++ compiler found")
    assert extractor._engine_for("efficientnet_lite0", "cpu") == ("auto", "auto")
    assert "cannot run here" in caplog.text


def test_bf16_agrees_and_never_shares_the_fp32_cache(cache_dir):
    files = paths()
    eager = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    bf16 = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="bf16", progress=False)
    assert bf16.n_extracted == len(files) and bf16.engine.precision == "bf16"
    assert 0.99 <= cosine(eager, bf16) < 1.0  # close, and really computed in bf16
    hit = extract_features(files, layers=TAPS, cache=cache_dir, runtime="torch", precision="fp32", progress=False)
    assert hit.n_extracted == 0 and np.array_equal(hit.X, eager.X)


@pytest.mark.slow
def test_text_encoder_through_onnx_compile_and_bf16(cache_dir):
    texts = ["A soft knit sweater, true to size.", "The zipper broke after one wash and the seams are loose " * 30,
             "Lovely dress", "Runs small; order a size up if you are between sizes", "ok"]
    kw = dict(backbone="minilm_l6", layers="layer.3,features", cache=cache_dir, progress=False, long_text="chunk",
              batch_size=2)  # batches of other sizes and lengths than the one the graph was traced on
    eager = extract_features(texts, runtime="torch", precision="fp32", **kw)
    assert cosine(eager, extract_features(texts, runtime="onnx", **kw)) >= 0.999
    assert cosine(eager, extract_features(texts, runtime="torch", precision="bf16", **kw)) >= 0.99
    if hardware.compiler_missing("cpu") is None:
        compiled = extract_features(texts, runtime="compile", precision="fp32", **kw)
        assert compiled.engine.runtime == "compile" and cosine(eager, compiled) >= 0.999


def test_saved_model_keeps_its_engine_and_old_models_load_as_eager_fp32(tmp_path, image_folder, cache_dir,
                                                                       monkeypatch, caplog):
    from transfuse.data import load_source

    source = load_source(image_folder)
    res = fit_source(source, out_dir=tmp_path / "m", cache=cache_dir, runtime="onnx")
    config = read_config(tmp_path / "m")
    assert config["parts"][0]["meta"]["params"]["engines"] == {"efficientnet_lite0": "onnx fp32"}
    assert res.metrics["extraction"]["efficientnet_lite0"].startswith("onnx fp32")
    model = load_model(tmp_path / "m", cache=cache_dir)
    expected = model.predict(source.items)
    assert model.named_steps["features"].engines_ == {"efficientnet_lite0": "onnx fp32"}
    monkeypatch.setattr("transfuse.engines.planner.onnx_available", lambda: False)  # a machine without onnxruntime
    model = load_model(tmp_path / "m", cache=cache_dir)
    assert (model.predict(source.items) == expected).mean() >= 0.9
    assert "cannot run here" in caplog.text and model.named_steps["features"].engines_["efficientnet_lite0"] != \
        "onnx fp32"
    auto = fit_source(source, out_dir=tmp_path / "a", cache=cache_dir)  # the engine auto chose is pinned, not "auto"
    pinned = read_config(tmp_path / "a")["parts"][0]["meta"]["params"]["engines"]["efficientnet_lite0"]
    assert pinned in ("torch bf16", "torch fp32", "onnx fp32") and auto.metrics["extraction"]
    old = load_model(Path(__file__).parent / "data" / "legacy" / "v2" / "fused").named_steps["features"]
    assert (old.runtime, old.precision, old.engines) == ("torch", "fp32", None)  # saved before engines existed


def test_eager_fp32_keeps_the_cache_keys_it_had_before_engines():
    from transfuse.cache import make_key
    from transfuse.engines import Plan
    from transfuse.extract import FORMAT, Job

    job = Job("b", "pretrained", "w", ["t"], "avg", "p", None, engine=Plan("torch", "fp32"))
    assert job.keys["t"] == make_key(format=FORMAT, backbone="b", weights="w", preprocess="p", tap="t", pooling="avg")
    bf16 = Job("b", "pretrained", "w", ["t"], "avg", "p", None, engine=Plan("torch", "bf16"))
    gpu = Job("b", "pretrained", "w", ["t"], "avg", "p", None, engine=Plan("torch", "bf16"), device="cuda")
    assert len({job.keys["t"], bf16.keys["t"], gpu.keys["t"]}) == 3


def test_non_finite_features_never_agree():
    ref = {"t": torch.ones(2, 3)}
    assert worst_cosine(ref, {"t": torch.tensor([[1.0, 1, 1], [float("nan"), 1, 1]])}) == -1.0
    assert worst_cosine(ref, {"t": torch.ones(2, 3)}) == pytest.approx(1.0)


def test_extractor_rejects_unknown_engine_names():
    with pytest.raises(DataError, match="'runtime' parameter of FeatureExtractor must be"):
        FeatureExtractor(runtime="tpu").fit(paths(2))


def test_prune_older_than_also_removes_unused_engine_files(cache_dir):
    store = EngineStore(cache_dir)
    files = {name: Path(cache_dir, folder, name) for folder, name in (
        ("compiled", "old-bf16.pt2"), ("compiled", "new-bf16.pt2"), ("onnx", "old.onnx"),
        ("compiled", "old-bf16.host.1.partial.pt2"), ("compiled", "new-fp32.host.2.partial.pt2"))}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    month_ago = time.time() - 30 * 86400
    for name in ("old-bf16.pt2", "old.onnx", "old-bf16.host.1.partial.pt2"):
        os.utime(files[name], (month_ago, month_ago))
    assert store.files() == sorted([files["new-bf16.pt2"], files["old-bf16.pt2"], files["old.onnx"]])
    env = {"TRANSFUSE_CACHE": cache_dir}
    assert cli("cache", "prune", "--older-than", "7", "--backbone", "x", env=env).returncode == 0
    assert len(store.files()) == 3  # a backbone condition keeps engine files (their names are hashes)
    assert cli("cache", "prune", "--older-than", "7", env=env).returncode == 0
    assert store.files() == [files["new-bf16.pt2"]]
    assert files["new-fp32.host.2.partial.pt2"].exists()  # a package being built is left alone
    assert not files["old-bf16.host.1.partial.pt2"].exists()  # the half-written one of a killed build is not
