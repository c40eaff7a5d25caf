"""Fixtures of the analysis-server tests: the gRPC and HTTP servers, edges.

Every test gets its own server (ports picked by the OS) and its own Redis key prefix, removed
afterwards; the redis-server process is shared by the session (``redis_url`` and ``make_server``
live in tests/conftest.py). Edges are real gRPC clients (helpers in tests/server_testkit.py).
"""

from __future__ import annotations

import time

import httpx
import pytest
import redis
from server_testkit import API_KEY, Edge, ServerThread


@pytest.fixture
def redis_client(redis_url):
    from analysis_server.redis_server import sync_client

    client = sync_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def server(make_server) -> ServerThread:
    return make_server()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def edges(server):
    """Factory of edges connected to ``server``; each waits until the server holds its stream."""
    opened: list[Edge] = []

    def connect(camera_id: str = "cam-1", wait_online: bool = True, target: str | None = None, **kw) -> Edge:
        e = Edge(target or server.grpc_target, camera_id, **kw)
        opened.append(e)
        e.hello()
        if wait_online:
            deadline = time.monotonic() + 10
            while server.services.link.session(camera_id) is None:
                assert time.monotonic() < deadline, "the server never registered the stream"
                time.sleep(0.01)
        return e

    yield connect
    for e in opened:
        e.close()
