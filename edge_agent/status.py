"""Counters of what the agent did, and the periodic status line that shows them.

``frames``      frames analysed              ``bad_frames``  frames skipped as unreadable
``faces``       faces found (sendable ones)  ``observations`` observations made (one per track window)
``sent``        observations put on the wire (replays included)
``acknowledged`` observations the server confirmed stored   ``rejected`` ones it refused
``spooled``     observations waiting for an ack (gauge)      ``spool_dropped`` dropped at the spool cap
``uploads_*``   enhancement requests answered, by status    ``reconnects`` streams re-opened
``store_errors`` spool or texture writes that failed (disk full, unwritable folder)
``spool_state`` ``ok``, ``full``, ``unwritable`` or ``error``: how the last spool write went (gauge);
``spool_errors`` spool writes that failed, ``spool_error`` the last reason (file only)
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from pathlib import Path

log = logging.getLogger("edge_agent.status")

LINE_FIELDS = ("frames", "faces", "observations", "sent", "acknowledged", "spooled", "rejected", "bad_frames",
               "spool_dropped", "uploads_ok", "uploads_expired", "uploads_unknown", "uploads_error", "reconnects",
               "store_errors")


class Counters:
    """Thread-safe counters; gauges are read through callables when a snapshot is taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: Counter[str] = Counter()
        self._gauges: dict[str, object] = {}

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def gauge(self, name: str, read) -> None:
        self._gauges[name] = read

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {k: 0 for k in LINE_FIELDS}
            out.update(self._c)
        for name, read in self._gauges.items():
            try:
                out[name] = read()
            except Exception as e:  # a gauge must never break the status line
                out[name] = f"error: {e}"
        return out

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._c[name]


def status_line(snap: dict[str, object]) -> str:
    parts = [f"{k}={snap.get(k, 0)}" for k in LINE_FIELDS]
    if snap.get("spool_state", "ok") != "ok":
        parts.append(f"spool_state={snap['spool_state']}")
    if "connected" in snap:
        parts.append(f"connected={snap['connected']}")
    return "status " + " ".join(parts)


def write_status_file(path: Path, snap: dict[str, object]) -> None:
    """Atomically replace ``path`` with the counters as JSON."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(snap, sort_keys=True, default=str))
    os.replace(tmp, path)
