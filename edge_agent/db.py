"""SQLite connections for the spool and the texture store.

WAL journal with ``synchronous=NORMAL``: a committed row survives the agent being killed at
any point (only a power cut may lose the last transactions), and readers never block the
camera workers' writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_agent.errors import StoreError


def open_db(path: Path, schema: str) -> sqlite3.Connection:
    """A connection usable from any thread (callers serialise with their own lock)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"cannot open the database {path}: {e}") from e
    return conn
