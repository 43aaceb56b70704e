"""Content-addressed feature store with an SQLite catalogue.

Layout under the cache root::

    catalogue.sqlite                 keys, shards and (key, item) -> (shard, row)
    shards/<key[:2]>/<key>/<id>.npy  float32 arrays, one per flushed block of rows and tap

A *key* identifies how features were made (backbone, weights identity, preprocessing,
tap, pooling); an *item* is the SHA-256 of an input's bytes. Shards are written to a
temporary file, fsynced and renamed before the catalogue points at them, so a killed
process leaves at worst an orphan file that ``prune`` removes; rows already committed
are reused by the next run. SQLite in WAL mode with a busy timeout serialises writers
from several processes; the key row, the shard row and the item rows of one ``put`` are
committed in one transaction. Each shard's CRC-32 is in the catalogue and checked before
its rows are used: a shard changed on disk is dropped and its items extracted again.
A cache in a folder this process cannot write is opened read-only: its features are served,
new ones are not stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfuse.atomic import atomic_writer, permissions
from transfuse.config import SETTINGS
from transfuse.errors import CacheError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY, backbone TEXT, weights TEXT, tap TEXT, pooling TEXT,
    meta TEXT, dim INTEGER, created REAL, last_used REAL);
CREATE TABLE IF NOT EXISTS shards (
    shard TEXT PRIMARY KEY, key TEXT NOT NULL, rows INTEGER, bytes INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS checksums (shard TEXT PRIMARY KEY, checksum TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS features (
    key TEXT NOT NULL, item TEXT NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (key, item)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_shard ON features(shard);
CREATE INDEX IF NOT EXISTS shards_key ON shards(key);
"""
ORPHAN_GRACE_S = 3600.0  # a file newer than this may belong to a writer still running
_VERIFIED: set[tuple] = set()  # shard files (path, mtime, checksum) already checked in this process
_KEY_FIELDS = ("backbone", "weights", "tap", "pooling")


def _checksum(array: np.ndarray) -> str:
    """CRC-32 of an array's bytes: catches a shard changed on disk (truncated, edited, bit rot)."""
    return f"crc32:{zlib.crc32(np.ascontiguousarray(array).data) & 0xFFFFFFFF:08x}"


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
    engine: str = ""  # "torch bf16", "onnx fp32"... (empty for entries written before engines existed)


def make_key(**parts: str) -> str:
    """Stable 32-hex key from named parts (order does not matter).

    >>> make_key(backbone="b", tap="t") == make_key(tap="t", backbone="b")
    True
    """
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _engine(meta_json: str | None) -> str:
    try:
        meta = json.loads(meta_json or "{}")
    except ValueError:
        return ""
    return " ".join(str(meta[k]) for k in ("runtime", "precision") if k in meta)


class FeatureCache:
    """Feature store rooted at ``root`` (default: ``TRANSFUSE_CACHE`` or ``~/.cache/transfuse``).

    >>> cache = FeatureCache("/tmp/fc")  # doctest: +SKIP
    >>> cache.put(key, ["item-a"], np.ones((1, 4), np.float32), describe)  # doctest: +SKIP
    >>> cache.get(key, ["item-a"]).shape  # doctest: +SKIP
    (1, 4)
    """

    def __init__(self, root: str | Path | None = None, read_only: bool | None = None) -> None:
        self.root = Path(root) if root is not None else SETTINGS.cache_dir
        catalogue = self.root / "catalogue.sqlite"
        if read_only is None:  # a catalogue we cannot write (or a folder we cannot): serve what is there
            read_only = catalogue.is_file() and not (os.access(self.root, os.W_OK) and os.access(catalogue, os.W_OK))
        self.read_only = read_only
        self._unusable: set[str] = set()  # shards found damaged in a read-only cache: their items are extracted
        if read_only:
            if not catalogue.is_file():
                raise CacheError(f"no feature cache at {self.root} to read")
            return
        try:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the feature cache at {self.root}: {exc.strerror or exc}; "
                             f"set TRANSFUSE_CACHE to a writable folder") from None
        for attempt in range(5):  # several processes may create a fresh catalogue at once
            try:
                self._run(lambda db: db.executescript(_SCHEMA))  # checksums in their own table: older versions still write
                break
            except CacheError as exc:
                if "locked" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        for name in ("catalogue.sqlite", "catalogue.sqlite-wal", "catalogue.sqlite-shm"):
            try:  # sqlite creates them with 0644 whatever the umask: shared like the shards
                (self.root / name).chmod(permissions(0o666))
            except OSError:  # not ours, or gone: leave it
                pass

    def _connect(self) -> sqlite3.Connection:
        path = self.root / "catalogue.sqlite"
        try:
            if self.read_only:  # without a write-ahead log left beside it, immutable: no lock files are needed
                flags = "mode=ro" if path.with_name(path.name + "-wal").exists() else "mode=ro&immutable=1"
                return sqlite3.connect(f"file:{path}?{flags}", uri=True, isolation_level=None)
            db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None

    def _db_error(self, exc: sqlite3.Error) -> CacheError:
        path = self.root / "catalogue.sqlite"
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CacheError(f"feature cache {path} is locked by another process ({text}); try again")
        if "not a database" in text or "malformed" in text:
            return CacheError(f"feature cache catalogue {path} is corrupt ({text}); delete it (features are "
                              f"re-extracted) or point TRANSFUSE_CACHE elsewhere")
        return CacheError(f"feature cache {path} cannot be used ({text}); check that it is writable "
                          f"or point TRANSFUSE_CACHE elsewhere")

    def _run(self, fn):
        """Run ``fn(db)`` on a fresh connection, turning sqlite errors into CacheError."""
        db = self._connect()
        try:
            return fn(db)
        except sqlite3.Error as exc:
            raise self._db_error(exc) from None
        finally:
            db.close()

    # -- items --------------------------------------------------------------------------
    def _locations(self, key: str) -> dict[str, tuple[str, int]]:
        rows = self._run(lambda db: db.execute("SELECT item, shard, row FROM features WHERE key=?", (key,)).fetchall())
        return {item: (shard, row) for item, shard, row in rows if shard not in self._unusable}

    def missing(self, key: str, items: list[str]) -> list[str]:
        """Items (unique, in first-seen order) with no usable features under ``key``: the shards
        holding the others are checked first (:meth:`verify`), so a vanished or changed one makes
        its items missing again."""
        have, _ = self._checked_locations(key, items)
        return [it for it in dict.fromkeys(items) if it not in have]

    def put(self, key: str, items: list[str], array: np.ndarray, describe: dict[str, str]) -> None:
        """Store one row per item: the shard file first, then key, shard and rows in one transaction.

        ``describe`` names what the key means (``backbone``, ``weights``, ``tap``, ``pooling``,
        optionally ``meta``). Items already stored under ``key`` keep their first copy; a shard
        none of whose rows were needed is deleted again.
        """
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.read_only:
            raise CacheError(f"the feature cache at {self.root} is read-only; point TRANSFUSE_CACHE at a writable "
                             f"folder to keep new features")
        if array.ndim != 2 or array.shape[0] != len(items):
            raise CacheError(f"cache.put needs a (len(items), dim) array, got {array.shape} for {len(items)} items")
        if not np.isfinite(array).all():
            raise CacheError("refusing to cache features with NaN or inf values")
        shard = f"{uuid.uuid4().hex}.npy"
        final = self._shard_path(key, shard)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(final) as fh:
                np.save(fh, array)
        except OSError as exc:
            raise CacheError(f"cannot write to the feature cache at {self.root}: {exc.strerror or exc}; "
                             f"free disk space or set TRANSFUSE_CACHE elsewhere") from None
        now = time.time()
        meta = json.dumps(describe.get("meta", {}))

        def commit(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO keys VALUES (?,?,?,?,?,?,?,?,?)",
                       (key, *(describe[f] for f in _KEY_FIELDS), meta, array.shape[1], now, now))
            db.execute("UPDATE keys SET dim=?, last_used=? WHERE key=?", (array.shape[1], now, key))
            db.execute("INSERT INTO shards VALUES (?,?,?,?,?)", (shard, key, len(items), final.stat().st_size, now))
            db.execute("INSERT OR REPLACE INTO checksums VALUES (?,?)", (shard, _checksum(array)))
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO features VALUES (?,?,?,?)",
                           [(key, it, shard, r) for r, it in enumerate(items)])
            added = db.total_changes - before
            if added == 0:  # another process stored all these rows first
                db.execute("DELETE FROM shards WHERE shard=?", (shard,))
                db.execute("DELETE FROM checksums WHERE shard=?", (shard,))
            db.execute("COMMIT")
            return added

        if self._run(commit) == 0:
            final.unlink(missing_ok=True)

    def dim(self, key: str) -> int:
        """Width of the vectors stored under ``key`` (0 when nothing is stored yet)."""
        row = self._run(lambda db: db.execute("SELECT dim FROM keys WHERE key=?", (key,)).fetchone())
        return int(row[0] or 0) if row else 0

    def get(self, key: str, items: list[str]) -> np.ndarray:
        """Stacked features of ``items`` (which must all be present) as a float32 array."""
        where = self._locations(key)
        if not self.read_only:
            self._run(lambda db: db.execute("UPDATE keys SET last_used=? WHERE key=?", (time.time(), key)))
        absent = [it for it in items if it not in where]
        if absent:
            raise CacheError(f"{len(absent)} items are not cached under key {key}; run the command again")
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
        return out if out is not None else np.empty((0, self.dim(key)), dtype=np.float32)

    def _shard_path(self, key: str, shard: str) -> Path:
        return self.root / "shards" / key[:2] / key / shard

    def _load_shard(self, key: str, shard: str) -> np.ndarray:
        path = self._shard_path(key, shard)
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            self._forget_shards([shard])
            raise CacheError(f"cache shard {path} is missing or unreadable ({exc}); it was removed from "
                             f"the catalogue, run the command again to re-extract") from None

    def _forget_shards(self, shards: list[str]) -> None:
        def forget(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM features WHERE shard=?", [(s,) for s in shards])
            db.executemany("DELETE FROM shards WHERE shard=?", [(s,) for s in shards])
            db.executemany("DELETE FROM checksums WHERE shard=?", [(s,) for s in shards])
            db.execute("COMMIT")

        self._run(forget)

    def verify(self, key: str, items: list[str] | None = None) -> int:
        """Drop the shards of ``key`` (those holding ``items``, or all) whose files vanished or whose
        rows no longer match their checksum, so their items are extracted again; shards written
        before checksums existed get theirs now. Returns how many shards were dropped."""
        return self._checked_locations(key, items)[1]

    def _checked_locations(self, key: str, items: list[str] | None) -> tuple[dict[str, tuple[str, int]], int]:
        """The usable locations of ``key``'s items, after checking the shards that hold ``items`` (or
        all), and how many shards were dropped. A read-only cache keeps bad shards listed but unused."""
        where = self._locations(key)
        holding = {loc[0] for loc in where.values()} if items is None else \
            {where[it][0] for it in dict.fromkeys(items) if it in where}
        checksums = dict(self._run(lambda db: db.execute(
            "SELECT c.shard, c.checksum FROM checksums c JOIN shards s ON s.shard = c.shard WHERE s.key=?",
            (key,)).fetchall()))
        gone, changed, adopted = [], [], []
        for shard in holding:
            path = self._shard_path(key, shard)
            try:
                stamp = (str(path), path.stat().st_mtime_ns)
            except OSError:
                gone.append(shard)
                continue
            expected = checksums.get(shard)
            if (*stamp, expected) in _VERIFIED:
                continue
            try:
                actual = _checksum(np.load(path, mmap_mode="r"))
            except (OSError, ValueError, EOFError):
                actual = None
            if expected is None and actual is not None:
                adopted.append((shard, actual))
            elif actual != expected:
                changed.append(shard)
                continue
            _VERIFIED.add((*stamp, expected or actual))
        if gone:
            log.warning("cache: %d shard files of key %s vanished; their items will be re-extracted", len(gone), key)
        if changed:
            log.warning("cache: %d shard files of key %s were changed on disk (checksum mismatch); their items will "
                        "be re-extracted", len(changed), key)
        bad = set(gone + changed)
        if bad and self.read_only:  # cannot drop them: their items are extracted and kept in memory
            self._unusable.update(bad)
        elif bad:
            self._forget_shards(list(bad))
        if adopted and not self.read_only:
            self._run(lambda db: db.executemany("INSERT OR REPLACE INTO checksums VALUES (?,?)", adopted))
        return {it: loc for it, loc in where.items() if loc[0] not in bad}, len(bad)

    # -- listing and pruning ------------------------------------------------------------
    def entries(self) -> list[KeyInfo]:
        """One :class:`KeyInfo` per key, most recently used first."""
        rows = self._run(lambda db: db.execute(
            """SELECT k.key, k.backbone, k.weights, k.tap, k.pooling, COALESCE(k.dim, 0),
                      (SELECT COUNT(*) FROM features f WHERE f.key = k.key),
                      (SELECT COALESCE(SUM(bytes), 0) FROM shards s WHERE s.key = k.key), k.last_used, k.meta
               FROM keys k ORDER BY k.last_used DESC""").fetchall())
        return [KeyInfo(*r[:-1], engine=_engine(r[-1])) for r in rows]

    def prune(self, older_than_days: float | None = None, backbone: str | None = None,
              everything: bool = False) -> dict[str, int]:
        """Delete keys and their files, then orphan files left by killed runs.

        With ``everything`` all keys go; otherwise keys matching ALL given conditions (unused for
        ``older_than_days``, of ``backbone``); with no condition only orphans go. Returns counts of
        keys, files and bytes removed. (Engine files beside the cache belong to
        :class:`transfuse.engines.EngineStore`, which prunes them.)
        """
        if self.read_only:
            raise CacheError(f"the feature cache at {self.root} is read-only; nothing can be pruned there")
        now = time.time()
        keys = self._run(lambda db: db.execute("SELECT key, backbone, last_used FROM keys").fetchall())
        conditions = older_than_days is not None or backbone is not None

        def doomed_key(bb: str, used: float) -> bool:
            if everything:
                return True
            if not conditions:
                return False
            return ((older_than_days is None or now - used > older_than_days * 86400)
                    and (backbone is None or bb == backbone))

        doomed = {k for k, bb, used in keys if doomed_key(bb, used)}

        def delete(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            for key in doomed:
                for table in ("features", "shards", "keys"):
                    db.execute(f"DELETE FROM {table} WHERE key=?", (key,))  # noqa: S608 (fixed names)
            # shards none of whose rows are referenced (duplicates written by racing writers)
            db.execute("DELETE FROM shards WHERE shard NOT IN (SELECT DISTINCT shard FROM features)")
            db.execute("DELETE FROM checksums WHERE shard NOT IN (SELECT shard FROM shards)")
            db.execute("COMMIT")

        self._run(delete)
        live = self._run(lambda db: {s for (s,) in db.execute("SELECT shard FROM shards")})
        removed = {"keys": len(doomed), "shards": 0, "bytes": 0}
        for path in (self.root / "shards").glob("*/*/*"):
            try:
                if path.name in live:
                    continue
                stat = path.stat()
                finished = path.suffix == ".npy" and not path.name.startswith(".")
                if (finished and path.parent.name in doomed) or now - stat.st_mtime > ORPHAN_GRACE_S:
                    path.unlink()
                    removed["bytes"] += stat.st_size
                    removed["shards"] += 1
            except OSError:
                continue  # vanished or in use: leave it to the next prune
        for folder in (self.root / "shards").glob("*/*"):
            try:
                if folder.name in doomed and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:
                continue
        self._run(lambda db: db.execute("VACUUM"))
        return removed
