import multiprocessing as mp
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from transfuse.cache import FeatureCache, make_key
from transfuse.errors import CacheError

DESC = {"backbone": "b", "weights": "w", "tap": "t", "pooling": "avg"}


def test_put_get_roundtrip_and_missing(cache_dir):
    cache = FeatureCache(cache_dir)
    key = make_key(tap="t")
    cache.put(key, ["a", "b"], np.array([[1, 2], [3, 4]], np.float32), DESC)
    assert cache.missing(key, ["b", "c", "c", "a"]) == ["c"]
    assert np.array_equal(cache.get(key, ["b", "a", "b"]), [[3, 4], [1, 2], [3, 4]])
    [entry] = cache.entries()
    assert (entry.items, entry.dim, entry.tap) == (2, 2, "t")


def test_refuses_nan_and_bad_shapes(cache_dir):
    cache = FeatureCache(cache_dir)
    key = make_key(tap="t")
    with pytest.raises(CacheError, match="NaN"):
        cache.put(key, ["a"], np.array([[np.nan]], np.float32), DESC)
    with pytest.raises(CacheError, match="len\\(items\\)"):
        cache.put(key, ["a", "b"], np.zeros((3, 2), np.float32), DESC)
    assert cache.missing(key, ["a"]) == ["a"]


def test_vanished_shard_is_forgotten(cache_dir):
    cache = FeatureCache(cache_dir)
    key = make_key(tap="t")
    cache.put(key, ["a"], np.ones((1, 3), np.float32), DESC)
    for f in Path(cache_dir, "shards").rglob("*.npy"):
        f.unlink()
    assert cache.verify(key) == 1
    assert cache.missing(key, ["a"]) == ["a"]


def test_prune_removes_keys_and_orphans(cache_dir):
    cache = FeatureCache(cache_dir)
    for tap in ("t1", "t2"):
        key = make_key(tap=tap)
        cache.put(key, ["a"], np.ones((1, 3), np.float32), {**DESC, "backbone": f"bb-{tap}", "tap": tap})
    orphan = Path(cache_dir, "shards", "ab", "ab" * 16, ".dead.npy.tmp")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half written")
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    removed = cache.prune(backbone="bb-t1")
    assert removed["keys"] == 1 and removed["shards"] == 2  # the key's shard and the orphan
    assert [e.tap for e in cache.entries()] == ["t2"]
    assert cache.prune(everything=True)["keys"] == 1 and cache.entries() == []


def test_duplicate_rows_do_not_leave_dead_shards(cache_dir):
    cache = FeatureCache(cache_dir)
    key = make_key(tap="t")
    cache.put(key, ["a", "b"], np.ones((2, 3), np.float32), DESC)
    cache.put(key, ["a", "b"], np.zeros((2, 3), np.float32), DESC)  # e.g. a second process, later
    assert len(list(Path(cache_dir, "shards").rglob("*.npy"))) == 1
    assert cache.get(key, ["a"])[0, 0] == 1.0


def test_prune_conditions_combine_with_and(cache_dir):
    cache = FeatureCache(cache_dir)
    for bb in ("x", "y"):
        cache.put(make_key(backbone=bb), ["a"], np.ones((1, 2), np.float32), {**DESC, "backbone": bb})
    assert cache.prune()["keys"] == 0  # no condition: only orphan files
    assert cache.prune(older_than_days=30, backbone="x")["keys"] == 0  # x is fresh
    assert cache.prune(older_than_days=0, backbone="x")["keys"] == 1
    assert [e.backbone for e in cache.entries()] == ["y"]


def test_corrupt_catalogue_gives_clear_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "catalogue.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheError, match="corrupt.*delete it.*TRANSFUSE_CACHE"):
        FeatureCache(tmp_path / "c")


def _writer(root: str, start: int, n: int) -> None:
    cache = FeatureCache(root)
    key = make_key(tap="t")
    for i in range(start, start + n, 5):  # overlapping item ranges in the two processes
        items = [f"item{j}" for j in range(i, i + 5)]
        cache.put(key, items, np.array([[j, j] for j in range(i, i + 5)], np.float32), DESC)


def test_two_processes_writing_at_once(cache_dir):
    FeatureCache(cache_dir)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(cache_dir, s, 100)) for s in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache = FeatureCache(cache_dir)
    key = make_key(tap="t")
    items = [f"item{j}" for j in range(150)]
    assert cache.missing(key, items) == []
    assert np.array_equal(cache.get(key, items)[:, 0], np.arange(150, dtype=np.float32))
    db = sqlite3.connect(Path(cache_dir) / "catalogue.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
