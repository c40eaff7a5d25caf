"""Fixtures of the analysis-server tests: an embedded redis-server, the gRPC and HTTP servers, edges.

Every test gets its own server (ports picked by the OS) and its own Redis key prefix, removed
afterwards; the redis-server process is shared by the session. Edges are real gRPC clients
(helpers live in server_testkit.py).
"""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
import redis
from server_testkit import API_KEY, TOKENS, Edge, SampleFace, ServerThread

from analysis_server.redis_server import EmbeddedRedis
from analysis_server.settings import ServerSettings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = embedded.start()
    yield url
    embedded.stop()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_server(redis_url, redis_client, tmp_path):
    """Start servers with setting overrides; each has a fresh key prefix, erased after the test."""
    started: list[ServerThread] = []
    prefixes: list[str] = []

    def make(prefix: str | None = None, **overrides) -> ServerThread:
        prefix = prefix or f"t{secrets.token_hex(4)}"
        prefixes.append(prefix)
        values = dict(host="127.0.0.1", grpc_port=0, http_port=0, redis_url=redis_url, key_prefix=prefix,
                      data_dir=tmp_path / "data", api_keys=API_KEY, camera_tokens=TOKENS, grpc_grace_s=0.5,
                      enhancement_timeout_s=5.0)
        values.update(overrides)
        s = ServerThread(ServerSettings(**values))
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
    for p in prefixes:
        keys = list(redis_client.scan_iter(match=f"{p}:*", count=1000))
        if keys:
            redis_client.delete(*keys)


@pytest.fixture
def server(make_server) -> ServerThread:
    return make_server()


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        yield client


# -- payloads from the real sample faces -------------------------------------------------------
@pytest.fixture(scope="session")
def samples(sample_faces) -> list[SampleFace]:
    """Every committed sample face with its base-layer payload and aligned chip."""
    from facecodec import base_layer

    return [SampleFace(p, f.feature, base_layer.encode(f.feature), f.chip) for p, f in sample_faces]


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
