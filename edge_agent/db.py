"""SQLite connections for the spool and the texture store.

WAL journal with ``synchronous=NORMAL``: a committed row survives the agent being killed at
any point (only a power cut may lose the last transactions), and readers never block the
camera workers' writes.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from edge_agent.errors import StoreError, StoreFullError, StoreUnwritableError

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


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialise with their own lock)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as e:
        raise store_error(f"cannot open the database {path}", e) from e
    return conn
