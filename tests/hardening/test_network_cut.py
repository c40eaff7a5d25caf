"""A network cut and a stall between a real edge agent and a real analysis server, through the
loopback TCP proxy of ``bench/tcp_proxy.py``: the edge notices, reconnects with a growing
backoff, and every face it made is stored once when the network is back."""

from __future__ import annotations

import re
import time

import pytest

from bench.tcp_proxy import TcpProxy
from testkit.processes import AgentProcess, CameraProcess, ServerProcess, wait_until

pytestmark = pytest.mark.slow

BACKOFF_INITIAL_S = 0.2  # AgentProcess sets EDGE_BACKOFF_INITIAL_S=0.2, EDGE_BACKOFF_MAX_S=2


def _delays(log_text: str) -> list[float]:
    return [float(x) for x in re.findall(r"reconnecting in ([0-9.]+) s", log_text)]


def _drained(agent: AgentProcess) -> bool:
    s = agent.status()
    return s.get("spooled") == 0 and s.get("connected") == "1/1"


def test_edge_survives_a_cut_and_a_stall_with_backoff_and_loses_nothing(tmp_path, procs):
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    proxy = TcpProxy("127.0.0.1", server.grpc_port).start()
    procs.append(proxy)
    camera = CameraProcess(seed=1)
    procs.append(camera)
    camera.start()
    agent = AgentProcess(tmp_path / "agent", proxy.address, [("cam-1", camera.url)], EDGE_ACK_TIMEOUT_S="2")
    procs.append(agent)
    agent.start()
    agent.wait_for("acknowledged", 2, timeout=300)

    # 1. cut: every connection reset, and every new one
    delays_before = len(_delays(agent.log.read_text()))
    reconnects, observations = agent.counter("reconnects"), agent.counter("observations")
    proxy.cut()
    wait_until(lambda: agent.status().get("connected") == "0/1", timeout=30, what="the edge to notice the cut")
    agent.wait_for("observations", observations + 2, timeout=60)  # faces keep coming, into the spool
    agent.wait_for("reconnects", reconnects + 4, timeout=60)  # it keeps trying
    delays = _delays(agent.log.read_text())[delays_before:]
    assert proxy.counters["connections_reset"] >= 4
    assert max(delays[:4]) > BACKOFF_INITIAL_S  # the delay grew: 0.2, 0.4, 0.8 ... (jitter in [d/2, d])
    assert agent.counter("acknowledged") < agent.counter("observations")
    proxy.restore()
    wait_until(lambda: _drained(agent), timeout=60, what="the spool to drain after the cut")

    # 2. stall: connections stay open, nothing goes through
    reconnects, observations = agent.counter("reconnects"), agent.counter("observations")
    proxy.stall()
    agent.wait_for("observations", observations + 2, timeout=60)
    agent.wait_for("reconnects", reconnects + 1, timeout=60)  # no ack for 2 s: it gave up on the stream
    assert "no ack for" in agent.log.read_text()
    proxy.restore()
    wait_until(lambda: _drained(agent), timeout=90, what="the spool to drain after the stall")

    camera.stop()
    time.sleep(1.5)  # open tracks end (TTL 0.4 s) and are sent
    wait_until(lambda: _drained(agent), timeout=60, what="the last faces")
    assert agent.stop() == 0
    made = agent.face_ids()
    stored = server.stored_faces("cam-1")
    assert len(stored) == len(set(stored)), "a face is stored twice"
    assert sorted(stored) == sorted(made), f"agent made {len(made)}, server holds {len(stored)}"
    assert agent.status()["spool_dropped"] == 0
