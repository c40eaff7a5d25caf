"""Disk full and an unwritable data folder at the edge: a typed error, a counter and a state in the
status file, no crash (and no crash loop), and recovery once the disk is writable again.

Caused for real: SQLite's own page cap (``PRAGMA max_page_count``, the same SQLITE_FULL a full
disk gives), a file-size limit on the agent process (``RLIMIT_FSIZE``: its writes fail with EFBIG
like on a full disk, raised again with ``prlimit`` to free the "disk"), and a data folder whose
path runs through a regular file (ENOTDIR). A read-only folder (chmod 0500) is not used: these
tests run as root, for whom permission bits do not stop writes.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from edge_agent.errors import StoreError, StoreFullError, StoreUnwritableError
from edge_agent.spool import Spool
from testkit.processes import AgentProcess, CameraProcess, ServerProcess, wait_until


def test_full_spool_raises_store_full_error_sets_its_state_and_recovers(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite3", 10 * 2**20)
    spool.put("cam-1", "a", b"x" * 100)
    pages = spool._conn.execute("PRAGMA page_count").fetchone()[0]
    spool._conn.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page
    with pytest.raises(StoreFullError, match="disk is full"):
        for i in range(100):
            spool.put("cam-1", f"f{i}", os.urandom(3000))
    assert spool.state == "full" and spool.errors == 1 and "disk is full" in spool.last_error
    kept = len(spool)
    spool._conn.execute("PRAGMA max_page_count = 1073741823")  # room again: no reopening needed
    spool.put("cam-1", "later", b"y" * 100)
    assert spool.state == "ok" and spool.last_error == "" and len(spool) == kept + 1
    assert [r.face_id for r in spool.pending("cam-1", limit=1000)][-1] == "later"


def test_data_folder_under_a_file_is_an_unwritable_store_error(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(StoreUnwritableError, match="cannot be written"):
        Spool(tmp_path / "blocker" / "data" / "spool.sqlite3", 2**20)
    assert issubclass(StoreUnwritableError, StoreError)


@pytest.mark.slow
def test_agent_waits_for_an_unwritable_data_folder_without_exiting_then_streams(tmp_path, procs):
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    camera = CameraProcess(seed=2)
    procs.append(camera)
    camera.start()
    (tmp_path / "agent").mkdir()
    blocker = tmp_path / "agent" / "data"
    blocker.write_text("a file where the data folder should be")  # the spool path runs through a file
    agent = AgentProcess(tmp_path / "agent", server.grpc_target, [("cam-1", camera.url)])
    procs.append(agent)
    agent.start()
    wait_until(lambda: agent.counter("store_errors") >= 2, timeout=60, what="two attempts to open the data folder")
    status = agent.status()
    assert agent.proc.poll() is None  # it waits; no exit for a supervisor to restart in a loop
    assert status["spool_state"] == "unwritable" and status["waiting_for_data_dir"] is True
    assert "cannot be written" in status["spool_error"] and status["connected"] == "0/1"
    pid = agent.proc.pid
    blocker.unlink()  # the operator fixes the folder
    agent.wait_for("acknowledged", 1, timeout=300)
    assert agent.proc.pid == pid and agent.status()["spool_state"] == "ok"


@pytest.mark.slow
def test_agent_on_a_full_disk_counts_errors_keeps_running_and_recovers(tmp_path, procs):
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    camera = CameraProcess(seed=3)
    procs.append(camera)
    camera.start()
    agent = AgentProcess(tmp_path / "agent", server.grpc_target, [("cam-1", camera.url)])
    procs.append(agent)
    agent.start()
    agent.wait_for("acknowledged", 1, timeout=300)  # the data folder exists and works
    # no file of the agent may grow past its first page any more: its disk is full (the spool is small and
    # its WAL is truncated after acks, so a limit above its size would never be reached)
    resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    wait_until(lambda: agent.status().get("spool_state") == "full", timeout=180, what="the spool to report a full disk")
    status = agent.status()
    assert status["spool_errors"] >= 1 and status["store_errors"] >= 1 and "disk is full" in status["spool_error"]
    frames = status["frames"]
    agent.wait_for("frames", frames + 4, timeout=60)  # the camera goes on: no crash, no exit
    assert agent.proc.poll() is None  # (its log is on the full disk too: the status file says why)
    resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    acked = agent.counter("acknowledged")
    wait_until(lambda: agent.status().get("spool_state") == "ok", timeout=120, what="the spool to write again")
    agent.wait_for("acknowledged", acked + 1, timeout=120)  # faces flow again
