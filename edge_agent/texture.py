"""The texture store at the edge: what is needed to answer an enhancement request.

For every observation sent, the 112x112 face crop (``facecodec.crop``; lossless PNG) and the
base-layer payload it predicts from are kept, so the enhancement layer can be coded on
request with whatever codec and quality the server asks for (paper 3.3: the texture stays
near the camera until someone needs it). Beside them, in the same row, the face's context
picture (:mod:`facecodec.context`, coded once when the face was sent): it is kept, sealed,
evicted, expired and dropped with the crop, under the same rules.

Bounded twice: ``max_bytes`` (the oldest faces are evicted to make room) and
``retention_s`` (older faces are deleted by :meth:`sweep` and refused by :meth:`get`). A
face that was evicted, expired or dropped at the server's request leaves a tombstone, so a
late request is answered EXPIRED, and a face never stored is UNKNOWN: a clear answer in
both cases, never a hang.

With a storage key (``EDGE_STORAGE_KEY``, :mod:`edge_agent.at_rest`) crops and base layers are
sealed with AES-256-GCM. A dropped face leaves the files when :meth:`drop` returns (secure
delete and a truncating checkpoint, see :mod:`edge_agent.db`); evicted and expired ones within
``wipe_delay_s``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from edge_agent.at_rest import Sealer
from edge_agent.db import Wiper, open_db
from edge_agent.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS texture (
    face_id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    base BLOB NOT NULL,
    crop BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS texture_created ON texture (created_ms);
CREATE TABLE IF NOT EXISTS tombstone (
    face_id TEXT PRIMARY KEY,
    gone_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstone_gone ON tombstone (gone_ms);
"""
CONTEXT_COLUMN = "ALTER TABLE texture ADD COLUMN context BLOB"  # stores made before the context layer

TOMBSTONE_S = 30 * 24 * 3600.0


class Lookup(Enum):
    OK = "ok"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Texture:
    status: Lookup
    crop: np.ndarray | None = None
    base: bytes | None = None
    reason: str = ""
    context: bytes | None = None  # the context payload, when asked for and kept


def _now_ms() -> int:
    return int(time.time() * 1000)


def encode_crop(crop: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(crop[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise StoreError("cannot PNG-encode a face crop")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise StoreError("a stored face crop cannot be decoded")
    return np.ascontiguousarray(image[:, :, ::-1])


class TextureStore:
    """Face crops by face id, in one SQLite file, bounded in size and age."""

    def __init__(self, path: Path, max_bytes: int, retention_s: float, sealer: Sealer | None = None,
                 wipe_delay_s: float = 1.0):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.retention_s = float(retention_s)
        self.sealer = sealer or Sealer(None)
        self._lock = threading.Lock()
        self._conn = open_db(self.path, SCHEMA)
        if "context" not in {r[1] for r in self._conn.execute("PRAGMA table_info(texture)")}:
            self._conn.execute(CONTEXT_COLUMN)
        self._wiper = Wiper(self._conn, self._lock, wipe_delay_s, f"texture store {self.path}")
        count, size = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM texture").fetchone()
        self._count, self._bytes = int(count), int(size)
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _bury(self, face_ids: list[str], reason: str, now_ms: int) -> None:
        self._conn.executemany("INSERT OR REPLACE INTO tombstone (face_id, gone_ms, reason) VALUES (?, ?, ?)",
                               [(f, now_ms, reason) for f in face_ids])

    def _write(self, fn) -> object:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn()
                    self._conn.execute("COMMIT")
                    return out
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                count, size = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM texture").fetchone()
                self._count, self._bytes = int(count), int(size)
                raise StoreError(f"cannot write the texture store {self.path}: {e}") from e

    def put(self, face_id: str, crop: np.ndarray, base: bytes, created_ms: int | None = None,
            context: bytes | None = None) -> int:
        """Keep the crop of ``face_id`` (and its context payload); returns how many older faces were
        evicted for room."""
        data = self.sealer.seal(encode_crop(crop), f"texture:{face_id}:crop")
        base = self.sealer.seal(base, f"texture:{face_id}:base")
        if context is not None:
            context = self.sealer.seal(context, f"texture:{face_id}:context")
        size = len(data) + len(base) + len(context or b"")
        if size > self.max_bytes:
            raise StoreError(f"a texture of {size} bytes is larger than the whole store ({self.max_bytes} bytes)")
        created = _now_ms() if created_ms is None else created_ms

        def run() -> int:
            evicted: list[str] = []
            while self._bytes + size > self.max_bytes and self._count:
                fid, fsize = self._conn.execute(
                    "SELECT face_id, size FROM texture ORDER BY created_ms LIMIT 1").fetchone()
                self._conn.execute("DELETE FROM texture WHERE face_id = ?", (fid,))
                evicted.append(fid)
                self._count -= 1
                self._bytes -= fsize
            self._bury(evicted, "evicted to keep the texture store under its size cap", _now_ms())
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO texture (face_id, created_ms, size, base, crop, context) VALUES (?, ?, ?, ?, ?, ?)",
                (face_id, created, size, sqlite3.Binary(base), sqlite3.Binary(data),
                 None if context is None else sqlite3.Binary(context)))
            if cur.rowcount:
                self._count += 1
                self._bytes += size
            return len(evicted)

        n = self._write(run)
        self.evicted += n
        if n:
            self._wiper.deleted()
        return n

    def get(self, face_id: str, now_ms: int | None = None, context: bool = False) -> Texture:
        """The crop and base layer of ``face_id`` (with ``context``: its context payload instead,
        ``None`` when none was kept), or why there is none."""
        now = _now_ms() if now_ms is None else now_ms
        columns = "created_ms, NULL, NULL, context" if context else "created_ms, base, crop, NULL"
        with self._lock:
            row = self._conn.execute(f"SELECT {columns} FROM texture WHERE face_id = ?", (face_id,)).fetchone()
            gone = None if row else self._conn.execute("SELECT reason FROM tombstone WHERE face_id = ?",
                                                       (face_id,)).fetchone()
        if row is None:
            if gone is not None:
                return Texture(Lookup.EXPIRED, reason=gone[0])
            return Texture(Lookup.UNKNOWN, reason="this edge never stored this face")
        created, base, crop, ctx = row
        if now - created > self.retention_s * 1000:
            self.sweep(now)
            return Texture(Lookup.EXPIRED, reason=f"older than the retention time of {self.retention_s:g} s")
        if context:
            return Texture(Lookup.OK, context=None if ctx is None else
                           self.sealer.open(bytes(ctx), f"texture:{face_id}:context"))
        return Texture(Lookup.OK, decode_crop(self.sealer.open(bytes(crop), f"texture:{face_id}:crop")),
                       self.sealer.open(bytes(base), f"texture:{face_id}:base"))

    def drop(self, face_ids: Iterable[str], reason: str = "dropped at the server's request") -> int:
        """Delete the texture of ``face_ids`` (privacy: the server erased them); gone from the files
        when this returns (or, if another connection was reading, within ``wipe_delay_s``)."""
        ids = list(face_ids)

        def run() -> int:
            removed = 0
            for fid in ids:
                row = self._conn.execute("SELECT size FROM texture WHERE face_id = ?", (fid,)).fetchone()
                if row:
                    self._conn.execute("DELETE FROM texture WHERE face_id = ?", (fid,))
                    self._count -= 1
                    self._bytes -= row[0]
                    removed += 1
            self._bury(ids, reason, _now_ms())
            return removed

        if not ids:
            return 0
        removed = self._write(run)
        with self._lock:
            if not self._wiper.now():
                self._wiper.deleted()
        return removed

    def sweep(self, now_ms: int | None = None) -> int:
        """Delete faces past their retention time (and very old tombstones); returns how many."""
        now = _now_ms() if now_ms is None else now_ms
        cutoff = now - int(self.retention_s * 1000)

        def run() -> int:
            rows = self._conn.execute("SELECT face_id, size FROM texture WHERE created_ms < ?", (cutoff,)).fetchall()
            self._conn.execute("DELETE FROM texture WHERE created_ms < ?", (cutoff,))
            self._count -= len(rows)
            self._bytes -= sum(r[1] for r in rows)
            self._bury([r[0] for r in rows], f"older than the retention time of {self.retention_s:g} s", now)
            self._conn.execute("DELETE FROM tombstone WHERE gone_ms < ?", (now - int(TOMBSTONE_S * 1000),))
            return len(rows)

        n = self._write(run)
        if n:
            log.info("texture store: %d faces past retention deleted", n)
            self._wiper.deleted()
        return n

    def close(self) -> None:
        with self._lock:
            self._wiper.now()
            self._wiper.close()
            self._conn.close()
