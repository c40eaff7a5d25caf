"""SQLite connections for the spool and the texture store.

WAL journal with ``synchronous=NORMAL``: a committed row survives the agent being killed at
any point (only a power cut may lose the last transactions), and readers never block the
camera workers' writes.

Deleted rows must leave the disk (a dropped face crop, an acknowledged base layer), and
SQLite keeps them in two places: the WAL holds every page version written since it was last
reset, and the database file keeps a deleted row's bytes in free space. Measured on the texture
store (95 chunks of 256 bytes of one dropped 24 kB PNG among 23 faces; chunks still found in
database / WAL): nothing done 90 / 90; ``wal_checkpoint(TRUNCATE)`` alone 75 / 0;
``secure_delete`` alone 90 / 90; ``secure_delete`` + ``wal_checkpoint(TRUNCATE)`` 0 / 0;
``VACUUM`` + ``wal_checkpoint(TRUNCATE)`` 0 / 0 (but it rewrites the whole file). So every
connection sets ``secure_delete`` (zeroes what a delete frees) and :class:`Wiper` runs a
``TRUNCATE`` checkpoint (the zeroed pages into the database file, the WAL cut to nothing) after
deletions. The folder is 0700 and the files 0600.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from pathlib import Path

from edge_agent.errors import StoreError, StoreFullError, StoreUnwritableError

log = logging.getLogger(__name__)

FULL_CODES = {"SQLITE_FULL"}
UNWRITABLE_CODES = {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
LOW_SPACE_BYTES = 1 << 20
UNWRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def out_of_space(folder: Path) -> str:
    """Why writes in ``folder`` fail for lack of room ("" when they should not): SQLite reports
    ENOSPC as SQLITE_FULL only for some writes, and a file-size limit (EFBIG) as an I/O error."""
    import resource

    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
            return f"{st.f_bavail * st.f_frsize} bytes free on the disk"
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            largest = max((p.stat().st_size for p in folder.iterdir() if p.is_file()), default=0)
            if largest + LOW_SPACE_BYTES > soft:
                return f"a file reached the process's file-size limit of {soft} bytes"
    except OSError:
        pass
    return ""


def store_error(message: str, error: BaseException, folder: Path | None = None) -> StoreError:
    """``message: error`` as the :class:`StoreError` subclass that says what to fix: a full disk,
    an unwritable folder, or something else."""
    name = getattr(error, "sqlite_errorname", "") or ""
    text = str(error).lower()
    if (name in FULL_CODES or "disk is full" in text
            or getattr(error, "errno", None) in FULL_ERRNOS):
        return StoreFullError(f"{message}: the disk is full ({error})")
    if name.startswith("SQLITE_IOERR") and folder is not None and (why := out_of_space(folder)):
        return StoreFullError(f"{message}: the disk is full ({why}; {error})")
    if (any(name.startswith(c) for c in UNWRITABLE_CODES) or "readonly" in text or "unable to open" in text
            or getattr(error, "errno", None) in UNWRITABLE_ERRNOS):
        return StoreUnwritableError(f"{message}: the folder cannot be written ({error})")
    return StoreError(f"{message}: {error}")


def _private(path: Path) -> None:
    """The database's folder readable by this user only (0700), the database and its WAL 0600
    (SQLite gives the WAL and shared-memory files the database file's mode)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if f.exists():
            os.chmod(f, 0o600)


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialise with their own lock)."""
    try:
        _private(path)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as e:
        raise store_error(f"cannot open the database {path}", e) from e
    return conn


class Wiper:
    """Makes deleted rows leave the files: a ``wal_checkpoint(TRUNCATE)`` at most ``delay_s`` after
    :meth:`deleted` (deletions in between share it), on a timer thread, under the store's lock.

    A checkpoint that cannot finish (another connection is reading) is tried again ``delay_s``
    later. :meth:`now` wipes at once (the texture store after a drop).
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock, delay_s: float, name: str):
        self.conn, self.lock, self.delay_s, self.name = conn, lock, delay_s, name
        self._timer: threading.Timer | None = None
        self._guard = threading.Lock()
        self._closed = False

    def deleted(self) -> None:
        with self._guard:
            if self._timer is None and not self._closed:
                self._timer = threading.Timer(self.delay_s, self._run)
                self._timer.daemon = True
                self._timer.start()

    def _run(self) -> None:
        with self._guard:
            self._timer = None
        with self.lock:
            done = self.now()
        if not done:
            self.deleted()

    def now(self) -> bool:
        """Checkpoint and truncate the WAL (the caller holds the store's lock); whether it finished."""
        if self._closed:
            return True
        try:
            busy, _, _ = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as e:
            log.warning("%s: deleted rows may stay in the WAL until the next checkpoint: %s", self.name, e)
            return False
        return not busy

    def close(self) -> None:
        """Stop the timer (the caller holds the store's lock and wipes once more before closing)."""
        with self._guard:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
