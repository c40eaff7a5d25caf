"""The on-disk spool of observations not yet acknowledged by the server.

Every observation is written here *before* it is sent (write-ahead), under its face id, and
deleted when the server's Ack names that id. After a reconnect, or after the agent itself
restarts, the stream replays everything still spooled for its camera in order. Face ids are
generated once and stored with the observation, so a replay is the same observation and the
server stores it once.

The spool is bounded by ``max_bytes``: when a new observation does not fit, the oldest ones
are dropped (and counted), so a long outage costs the oldest faces, never the disk.

Acknowledged and dropped observations leave the files within ``wipe_delay_s`` (secure delete
and a truncating checkpoint, see :mod:`edge_agent.db`); with a storage key (``EDGE_STORAGE_KEY``)
each observation is sealed with AES-256-GCM (:mod:`edge_agent.at_rest`).

A write that fails raises :class:`~edge_agent.errors.StoreFullError` (disk full, file-size
limit), :class:`~edge_agent.errors.StoreUnwritableError` (read-only or missing folder) or
:class:`~edge_agent.errors.StoreError`; :attr:`Spool.state` says which until a write succeeds
again (SQLite needs no reopening once space is back), :attr:`Spool.errors` counts them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.at_rest import Sealer
from edge_agent.db import Wiper, open_db, store_error
from edge_agent.errors import StoreError, StoreFullError, StoreUnwritableError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id TEXT NOT NULL,
    face_id TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    format INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS spool_camera_seq ON spool (camera_id, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
V1, V2 = 1, 2  # what ``data`` holds: a facewire.v1.FaceObservation, or a facewire.v2.SpooledFace


@dataclass(frozen=True)
class SpooledObservation:
    seq: int
    face_id: str
    data: bytes
    format: int = V1


class Spool:
    """Unacknowledged observations of every camera of this agent, in one SQLite file."""

    def __init__(self, path: Path, max_bytes: int, sealer: Sealer | None = None, wipe_delay_s: float = 1.0):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.sealer = sealer or Sealer(None)
        self._lock = threading.Lock()
        self._conn = open_db(self.path, SCHEMA)
        self._migrate()
        self._wiper = Wiper(self._conn, self._lock, wipe_delay_s, f"spool {self.path}")
        self.agent_id = self._agent_id()
        self._changed = threading.Condition()
        count, size = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
        self._count, self._bytes = int(count), int(size)
        self.dropped = 0
        self.errors = 0
        self.state = "ok"  # "ok", "full", "unwritable" or "error": how the last write went
        self.last_error = ""
        self._generation = 0

    def _migrate(self) -> None:
        """Spools written before the compact wire have no ``format`` column: their rows are v1."""
        try:
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(spool)")}
            if "format" not in columns:
                self._conn.execute("ALTER TABLE spool ADD COLUMN format INTEGER NOT NULL DEFAULT 1")
        except sqlite3.Error as e:
            raise store_error(f"cannot upgrade the spool {self.path}", e, self.path.parent) from e

    def _agent_id(self) -> bytes:
        """This agent's id on the wire (facewire.v2 Hello): made once, kept for the life of the spool."""
        import os

        from facewire.ids import AGENT_ID_BYTES

        try:
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('agent_id', ?)",
                               (os.urandom(AGENT_ID_BYTES),))
            return bytes(self._conn.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()[0])
        except sqlite3.Error as e:
            raise store_error(f"cannot write the spool {self.path}", e, self.path.parent) from e

    def face_id(self, seq: int) -> str:
        """The id of observation ``seq`` (:func:`facewire.ids.face_id`)."""
        from facewire.ids import face_id

        return face_id(self.agent_id, seq)

    def allocate(self) -> int:
        """The sequence number of the next observation (before it is built: its face id derives from
        it); never handed out twice, even across restarts and whatever is deleted."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
                    used = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
                    seq = max(int(row[0]) if row else 1, (int(used[0]) + 1) if used else 1)
                    self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (seq + 1,))
                    self._conn.execute("COMMIT")
                except BaseException:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise
            except sqlite3.Error as e:
                raise self._failed(store_error(f"cannot write the spool {self.path}", e, self.path.parent)) from e
        return seq

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._bytes

    def count(self, camera_id: str) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM spool WHERE camera_id = ?", (camera_id,)).fetchone()[0]

    def put(self, camera_id: str, face_id: str, data: bytes, seq: int | None = None, format: int = V1) -> list[str]:
        """Spool one serialised observation (under ``seq`` when :meth:`allocate` gave one); returns the
        face ids dropped to stay under the cap.

        Raises :class:`StoreError` when the file cannot be written (disk full, read-only...).
        """
        data = self.sealer.seal(data, f"spool:{face_id}")
        size = len(data)
        if size > self.max_bytes:
            raise StoreError(f"an observation of {size} bytes is larger than the whole spool ({self.max_bytes} bytes)")
        dropped: list[str] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    while self._bytes + size > self.max_bytes and self._count:
                        row = self._conn.execute("SELECT seq, face_id, size FROM spool ORDER BY seq LIMIT 1").fetchone()
                        self._conn.execute("DELETE FROM spool WHERE seq = ?", (row[0],))
                        dropped.append(row[1])
                        self._count -= 1
                        self._bytes -= row[2]
                    cur = self._conn.execute(
                        "INSERT OR IGNORE INTO spool (seq, camera_id, face_id, created_ms, size, data, format) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, camera_id, face_id, int(time.time() * 1000), size, sqlite3.Binary(data), format),
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:  # SQLite may have rolled back already (disk full): keep the first error
                        pass
                    raise
            except sqlite3.Error as e:
                self._recount()
                raise self._failed(store_error(f"cannot write the spool {self.path}", e, self.path.parent)) from e
            self.state, self.last_error = "ok", ""
            if cur.rowcount:
                self._count += 1
                self._bytes += size
        if dropped:
            self._wiper.deleted()
            self.dropped += len(dropped)
            log.warning("spool full (%d bytes cap): dropped the %d oldest unacknowledged observations",
                        self.max_bytes, len(dropped))
        self._notify()
        return dropped

    def pending(self, camera_id: str, after_seq: int = 0, limit: int = 32) -> list[SpooledObservation]:
        """Spooled observations of ``camera_id`` with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, face_id, data, format FROM spool WHERE camera_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (camera_id, after_seq, limit),
            ).fetchall()
        return [SpooledObservation(s, f, self.sealer.open(bytes(d), f"spool:{f}"), k) for s, f, d, k in rows]

    def ack(self, face_ids: Iterable[str]) -> int:
        """Forget acknowledged (or rejected) observations; returns how many were spooled."""
        ids = list(face_ids)
        if not ids:
            return 0
        chunks = [ids[i : i + 500] for i in range(0, len(ids), 500)]
        return self._delete([(f"face_id IN ({','.join('?' * len(c))})", c) for c in chunks])

    def ack_through(self, camera_id: str, seq: int) -> int:
        """Forget every observation of ``camera_id`` up to ``seq`` (a facewire.v2 Ack); returns how many."""
        return self._delete([("camera_id = ? AND seq <= ?", [camera_id, seq])])

    def _delete(self, conditions: list[tuple[str, list]]) -> int:
        removed = 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for where, args in conditions:
                    n, size = self._conn.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool WHERE {where}", args).fetchone()
                    self._conn.execute(f"DELETE FROM spool WHERE {where}", args)
                    removed += n
                    self._count -= n
                    self._bytes -= size
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._recount()
                raise self._failed(store_error(f"cannot update the spool {self.path}", e, self.path.parent)) from e
        if removed:
            self._wiper.deleted()  # acknowledged base layers leave the WAL and the file too
        self._notify()
        return removed

    @property
    def generation(self) -> int:
        """Grows by one at every change; pass it to :meth:`wait_for_change`."""
        return self._generation

    def wake(self) -> None:
        """Wake every :meth:`wait_for_change` (something else than the spool wants attention)."""
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until the spool changed since generation ``seen`` (or ``timeout`` passes)."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen, timeout)
            return self._generation

    def _failed(self, error: StoreError) -> StoreError:
        self.errors += 1
        self.state = ("full" if isinstance(error, StoreFullError) else
                      "unwritable" if isinstance(error, StoreUnwritableError) else "error")
        self.last_error = str(error)
        return error

    def _recount(self) -> None:
        try:
            count, size = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
            self._count, self._bytes = int(count), int(size)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            self._wiper.now()
            self._wiper.close()
            self._conn.close()
