import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transfuse.cache import FeatureCache
from transfuse.errors import CorruptInputError, UnknownLayerError
from transfuse.extract import extract_features
from transfuse.featurizers import FeatureExtractor


def paths_of(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.png"))


def test_multi_tap_layout_and_cache_hit(image_folder, cache_dir):
    paths = paths_of(image_folder)
    f1 = extract_features(paths, backbone="tiny_cnn", layers="blocks.0,features,logits", cache=cache_dir)
    assert f1.X.dtype == np.float32 and f1.X.shape == (24, 16 + 32 + 10)
    assert f1.slices == {"blocks.0": slice(0, 16), "features": slice(16, 48), "logits": slice(48, 58)}
    assert f1.feature_names[16] == "features:0" and f1.n_extracted == 24
    f2 = extract_features(paths, backbone="tiny_cnn", layers="blocks.0,features,logits", cache=cache_dir)
    assert f2.n_extracted == 0 and f2.n_cached == 24
    assert np.array_equal(f1.X, f2.X)
    f3 = extract_features(paths, backbone="tiny_cnn", layers="blocks.0,features,logits", cache=False)
    np.testing.assert_allclose(f1.X, f3.X, rtol=1e-5, atol=1e-6)


def test_only_new_images_are_extracted(image_folder, cache_dir):
    paths = paths_of(image_folder)
    extract_features(paths[:10], backbone="tiny_cnn", cache=cache_dir)
    f = extract_features(paths, backbone="tiny_cnn", cache=cache_dir)
    assert (f.n_extracted, f.n_cached) == (14, 10)


def test_same_content_under_another_name_is_a_cache_hit(image_folder, cache_dir, tmp_path):
    paths = paths_of(image_folder)
    extract_features(paths, backbone="tiny_cnn", cache=cache_dir)
    copy = tmp_path / "renamed.png"
    shutil.copy(paths[0], copy)
    assert extract_features([str(copy)], backbone="tiny_cnn", cache=cache_dir).n_extracted == 0


def test_cache_key_separates_pooling_weights_and_taps(image_folder, cache_dir):
    paths = paths_of(image_folder)[:4]
    base = extract_features(paths, backbone="tiny_cnn", cache=cache_dir)
    for kwargs in ({"pooling": "max"}, {"weights": "random"}, {"layers": "blocks.1"}):
        other = extract_features(paths, backbone="tiny_cnn", cache=cache_dir, **kwargs)
        assert other.n_extracted == 4
    assert not np.allclose(base.X, extract_features(paths, backbone="tiny_cnn", cache=cache_dir, pooling="max").X)


def test_cls_pooling_on_a_convolutional_map_is_an_error(image_folder, cache_dir):
    from transfuse.errors import DataError

    paths = paths_of(image_folder)[:2]
    with pytest.raises(DataError, match="class token.*features.*avg, max"):
        FeatureExtractor(backbone="tiny_cnn", pooling="cls", cache=cache_dir).fit(paths)
    logits = FeatureExtractor(backbone="tiny_cnn", layers="logits", pooling="cls", cache=cache_dir).fit_transform(paths)
    assert logits.shape == (2, 10)  # a vector has nothing to pool: any pooling passes it through
    saved = FeatureExtractor.from_state(*FeatureExtractor(backbone="tiny_cnn", cache=cache_dir).fit(paths).get_state())
    saved.pooling = "cls"  # as a model saved before the check holds it: it still predicts
    assert saved.transform(paths).shape == (2, 32)


def test_corrupt_files_raise_after_caching_the_rest(image_folder, cache_dir):
    bad = image_folder / "bag" / "broken.png"
    bad.write_bytes(Path(paths_of(image_folder)[0]).read_bytes()[:40])  # truncated PNG
    text = image_folder / "bag" / "fake.jpg"
    text.write_text("hello")
    paths = paths_of(image_folder) + [str(text)]
    with pytest.raises(CorruptInputError, match="2 of 26 files could not be read.*--skip-bad") as info:
        extract_features(paths, backbone="tiny_cnn", cache=cache_dir)
    assert sorted(info.value.paths) == sorted([str(bad), str(text)])
    skipped = extract_features(paths, backbone="tiny_cnn", cache=cache_dir, on_error="skip")
    assert skipped.n_cached == 24 and len(skipped.failed) == 2  # only the 2 bad files are retried
    assert np.isnan(skipped.X[skipped.failed]).all() and not np.isnan(np.delete(skipped.X, skipped.failed, 0)).any()


def test_missing_file_and_wrong_layer(image_folder, cache_dir):
    with pytest.raises(CorruptInputError, match="file not found"):
        extract_features([str(image_folder / "nope.png")], backbone="tiny_cnn", cache=cache_dir)
    with pytest.raises(UnknownLayerError, match="no layer 'conv9'"):
        extract_features(paths_of(image_folder), backbone="tiny_cnn", layers="conv9", cache=cache_dir)


@pytest.mark.slow
def test_killed_run_resumes_with_only_missing_items(image_folder, cache_dir):
    """A real SIGKILL halfway through: committed batches are reused, nothing half-written is read."""
    paths = paths_of(image_folder)
    script = textwrap.dedent(f"""
        import os, signal
        from transfuse import cache as c
        from transfuse.extract import local
        from transfuse.extract import extract_features
        local.FLUSH_ROWS = 4  # one cache shard per batch of 4
        real_put, calls = c.FeatureCache.put, []
        def put(self, *a, **k):
            real_put(self, *a, **k)
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        c.FeatureCache.put = put
        extract_features({paths!r}, backbone="tiny_cnn", batch_size=4, num_workers=0, cache={cache_dir!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    resumed = extract_features(paths, backbone="tiny_cnn", batch_size=4, cache=cache_dir)
    assert (resumed.n_cached, resumed.n_extracted) == (12, 12)
    fresh = extract_features(paths, backbone="tiny_cnn", cache=False)
    np.testing.assert_allclose(resumed.X, fresh.X, rtol=1e-5, atol=1e-6)
    assert FeatureCache(cache_dir).prune()["keys"] == 0


def test_feature_extractor_is_an_sklearn_transformer(image_folder, cache_dir):
    from sklearn.base import clone

    ext = FeatureExtractor(backbone="tiny_cnn", layers=["blocks.1", "features"], cache=cache_dir)
    X = ext.fit_transform(paths_of(image_folder))
    assert X.shape == (24, 56) and ext.slices_["features"] == slice(24, 56)
    assert ext.get_feature_names_out()[0] == "blocks.1:0"
    assert clone(ext).get_params() == ext.get_params()


def test_workers_give_the_same_features(image_folder, cache_dir):
    paths = paths_of(image_folder) * 3  # 72 items -> worker processes by default
    a = extract_features(paths, backbone="tiny_cnn", cache=False, num_workers=2)
    b = extract_features(paths, backbone="tiny_cnn", cache=False, num_workers=0)
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)


def _extract_into(paths, cache_dir, queue):
    from transfuse.extract import extract_features

    feats = extract_features(paths, backbone="tiny_cnn", layers="blocks.0,features", batch_size=2,
                             num_workers=0, cache=cache_dir)
    queue.put(feats.X)


@pytest.mark.slow
def test_four_processes_extracting_into_one_cache(image_folder, cache_dir, monkeypatch):
    import multiprocessing as mp

    paths = paths_of(image_folder)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_extract_into, args=(paths, cache_dir, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    again = extract_features(paths, backbone="tiny_cnn", layers="blocks.0,features", cache=cache_dir)
    assert again.n_extracted == 0
    for X in results:
        np.testing.assert_array_equal(X, again.X)  # four writers, one answer, bit for bit
    from transfuse.cache import FeatureCache

    store = FeatureCache(cache_dir)  # integrity: every shard both wrote is whole and matches its checksum
    assert all(store.verify(entry.key) == 0 for entry in store.entries())


def test_ctrl_c_keeps_the_rows_already_computed(image_folder, cache_dir, monkeypatch):
    from transfuse.extract import local

    real, calls = local.embed_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "embed_batch", interrupted)
    paths = paths_of(image_folder)
    with pytest.raises(KeyboardInterrupt):
        extract_features(paths, backbone="tiny_cnn", batch_size=4, num_workers=0, cache=cache_dir)
    monkeypatch.setattr(local, "embed_batch", real)
    resumed = extract_features(paths, backbone="tiny_cnn", batch_size=4, num_workers=0, cache=cache_dir)
    assert (resumed.n_cached, resumed.n_extracted) == (8, 16)


def test_a_deadline_stops_extraction_after_the_batch_that_passes_it_and_keeps_that_batch(image_folder, tmp_path):
    """``auto`` gives its trials a deadline: extraction stops after the batch that passes it, the rows
    computed so far are cached, and the next run extracts only the rest."""
    import time

    from transfuse.data import load_image_folder
    from transfuse.errors import OutOfTime
    from transfuse.extract import deadline

    items = load_image_folder(image_folder).items
    cache = str(tmp_path / "cache")
    with deadline(time.monotonic() - 1), pytest.raises(OutOfTime, match="after 4 of 24 new items"):
        extract_features(items, backbone="tiny_cnn", cache=cache, batch_size=4, num_workers=0, runtime="torch",
                         precision="fp32")
    again = extract_features(items, backbone="tiny_cnn", cache=cache, batch_size=4, num_workers=0, runtime="torch",
                             precision="fp32")
    assert (again.n_cached, again.n_extracted) == (4, 20)
