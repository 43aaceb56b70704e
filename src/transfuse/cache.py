"""Content-addressed feature store with an SQLite catalogue.

Layout under the cache root::

    catalogue.sqlite                 keys, shards and (key, item) -> (shard, row)
    shards/<key[:2]>/<key>/<id>.npy  float32 arrays, one per extracted batch and tap

A *key* identifies how features were made (backbone, weights identity, preprocessing,
tap, pooling); an *item* is the SHA-256 of an input's bytes. Shards are written to a
temporary file, fsynced and renamed before the catalogue points at them, so a killed
process leaves at worst an orphan file that ``prune`` removes; rows already committed
are reused by the next run. SQLite in WAL mode with a busy timeout serialises writers
from several processes; rows are inserted with ``INSERT OR IGNORE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfuse.config import SETTINGS
from transfuse.errors import CacheError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY, backbone TEXT, weights TEXT, tap TEXT, pooling TEXT,
    meta TEXT, dim INTEGER, created REAL, last_used REAL);
CREATE TABLE IF NOT EXISTS shards (
    shard TEXT PRIMARY KEY, key TEXT NOT NULL, rows INTEGER, bytes INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS features (
    key TEXT NOT NULL, item TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (key, item)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_shard ON features(shard);
CREATE INDEX IF NOT EXISTS shards_key ON shards(key);
"""
ORPHAN_GRACE_S = 3600.0  # a shard file newer than this may belong to a writer still running


@dataclass(frozen=True)
class KeyInfo:
    """One row of ``cache ls``."""

    key: str
    backbone: str
    weights: str
    tap: str
    pooling: str
    dim: int
    items: int
    bytes: int
    last_used: float


def make_key(**parts: str) -> str:
    """Stable 32-hex key from named parts (order does not matter).

    >>> make_key(backbone="b", tap="t") == make_key(tap="t", backbone="b")
    True
    """
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class FeatureCache:
    """Feature store rooted at ``root`` (default: ``TRANSFUSE_CACHE`` or ``~/.cache/transfuse``).

    >>> cache = FeatureCache("/tmp/fc")  # doctest: +SKIP
    >>> cache.put(key, ["item-a"], np.ones((1, 4), np.float32))  # doctest: +SKIP
    >>> cache.get(key, ["item-a"]).shape  # doctest: +SKIP
    (1, 4)
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else SETTINGS.cache_dir
        try:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"feature cache catalogue {self.root / 'catalogue.sqlite'} is unusable ({exc}); "
                             f"delete it or point TRANSFUSE_CACHE elsewhere") from None
        except OSError as exc:
            raise CacheError(f"cannot create the feature cache at {self.root}: {exc.strerror or exc}; "
                             f"set TRANSFUSE_CACHE to a writable folder") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "catalogue.sqlite", timeout=60.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- keys ---------------------------------------------------------------------------
    def register_key(self, key: str, *, backbone: str, weights: str, tap: str, pooling: str,
                     meta: dict | None = None) -> None:
        """Record what a key means (idempotent)."""
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO keys VALUES (?,?,?,?,?,?,?,?,?)",
                (key, backbone, weights, tap, pooling, json.dumps(meta or {}), None, now, now),
            )

    # -- items --------------------------------------------------------------------------
    def _locations(self, db: sqlite3.Connection, key: str) -> dict[str, tuple[str, int]]:
        rows = db.execute("SELECT item, shard, row FROM features WHERE key=?", (key,)).fetchall()
        return {item: (shard, row) for item, shard, row in rows}

    def missing(self, key: str, items: list[str]) -> list[str]:
        """Items (unique, in first-seen order) with no stored features under ``key``."""
        with self._connect() as db:
            have = self._locations(db, key)
        seen: set[str] = set()
        out = []
        for it in items:
            if it not in have and it not in seen:
                seen.add(it)
                out.append(it)
        return out

    def put(self, key: str, items: list[str], array: np.ndarray) -> None:
        """Store one row per item atomically (file first, then catalogue)."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(items):
            raise CacheError(f"cache.put needs a (len(items), dim) array, got {array.shape} for {len(items)} items")
        if not np.isfinite(array).all():
            raise CacheError("refusing to cache features with NaN or inf values")
        shard = f"{uuid.uuid4().hex}.npy"
        folder = self.root / "shards" / key[:2] / key
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / shard
        tmp = folder / f".{shard}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        now = time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE keys SET dim=?, last_used=? WHERE key=?", (array.shape[1], now, key))
            db.execute("INSERT INTO shards VALUES (?,?,?,?,?)", (shard, key, len(items), final.stat().st_size, now))
            db.executemany("INSERT OR IGNORE INTO features VALUES (?,?,?,?)",
                           [(key, it, shard, r) for r, it in enumerate(items)])
            db.execute("COMMIT")

    def dim(self, key: str) -> int:
        """Width of the vectors stored under ``key`` (0 when nothing is stored yet)."""
        with self._connect() as db:
            row = db.execute("SELECT dim FROM keys WHERE key=?", (key,)).fetchone()
        return int(row[0] or 0) if row else 0

    def get(self, key: str, items: list[str]) -> np.ndarray:
        """Stacked features of ``items`` (which must all be present) as a float32 array."""
        with self._connect() as db:
            where = self._locations(db, key)
            db.execute("UPDATE keys SET last_used=? WHERE key=?", (time.time(), key))
        absent = [it for it in items if it not in where]
        if absent:
            raise CacheError(f"{len(absent)} items are not cached under key {key}")
        by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for pos, it in enumerate(items):
            shard, row = where[it]
            by_shard[shard].append((pos, row))
        out: np.ndarray | None = None
        for shard, pairs in by_shard.items():
            arr = self._load_shard(key, shard)
            if out is None:
                out = np.empty((len(items), arr.shape[1]), dtype=np.float32)
            pos, rows = zip(*pairs)
            out[list(pos)] = arr[list(rows)]
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def _load_shard(self, key: str, shard: str) -> np.ndarray:
        path = self.root / "shards" / key[:2] / key / shard
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            self._forget_shards([shard])
            raise CacheError(f"cache shard {path} is missing or unreadable ({exc}); it was removed from "
                             f"the catalogue, run the command again to re-extract") from None

    def _forget_shards(self, shards: list[str]) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM features WHERE shard=?", [(s,) for s in shards])
            db.executemany("DELETE FROM shards WHERE shard=?", [(s,) for s in shards])
            db.execute("COMMIT")

    def verify(self, key: str) -> int:
        """Drop catalogue rows whose shard files vanished; return how many shards were dropped."""
        with self._connect() as db:
            shards = [s for (s,) in db.execute("SELECT shard FROM shards WHERE key=?", (key,))]
        gone = [s for s in shards if not (self.root / "shards" / key[:2] / key / s).is_file()]
        if gone:
            log.warning("cache: %d shard files of key %s vanished; their items will be re-extracted", len(gone), key)
            self._forget_shards(gone)
        return len(gone)

    # -- listing and pruning ------------------------------------------------------------
    def entries(self) -> list[KeyInfo]:
        """One :class:`KeyInfo` per key, most recently used first."""
        with self._connect() as db:
            rows = db.execute(
                """SELECT k.key, k.backbone, k.weights, k.tap, k.pooling, COALESCE(k.dim, 0),
                          (SELECT COUNT(*) FROM features f WHERE f.key = k.key),
                          (SELECT COALESCE(SUM(bytes), 0) FROM shards s WHERE s.key = k.key), k.last_used
                   FROM keys k ORDER BY k.last_used DESC"""
            ).fetchall()
        return [KeyInfo(*r) for r in rows]

    def prune(self, older_than_days: float | None = None, backbone: str | None = None,
              everything: bool = False) -> dict[str, int]:
        """Delete keys (all, unused for ``older_than_days``, or of one ``backbone``) and any
        orphan shard files; return counts of keys, shards and bytes removed."""
        now = time.time()
        with self._connect() as db:
            keys = db.execute("SELECT key, backbone, last_used FROM keys").fetchall()
        doomed = [k for k, bb, used in keys if everything
                  or (older_than_days is not None and now - used > older_than_days * 86400)
                  or (backbone is not None and bb == backbone)]
        removed = {"keys": 0, "shards": 0, "bytes": 0}
        for key in doomed:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM features WHERE key=?", (key,))
                db.execute("DELETE FROM shards WHERE key=?", (key,))
                db.execute("DELETE FROM keys WHERE key=?", (key,))
                db.execute("COMMIT")
            removed["keys"] += 1
        with self._connect() as db:
            live = {s for (s,) in db.execute("SELECT shard FROM shards")}
        for path in (self.root / "shards").glob("*/*/*"):
            name = path.name.lstrip(".").removesuffix(".tmp")
            if name in live:
                continue
            if path.parent.name in doomed or now - path.stat().st_mtime > ORPHAN_GRACE_S:
                removed["bytes"] += path.stat().st_size
                removed["shards"] += 1
                path.unlink(missing_ok=True)
        for folder in (self.root / "shards").glob("*/*"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        with self._connect() as db:
            db.execute("VACUUM")
        return removed
