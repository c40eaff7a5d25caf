"""Fixtures of the dashboard tests: an analysis server (in a thread, or a real process for the
browser test) on an embedded redis-server, and real edge-side gRPC clients (tests/server's kit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_testkit import API_KEY, TOKENS, SampleFace, ServerThread

from analysis_server.redis_server import EmbeddedRedis
from analysis_server.settings import ServerSettings


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="module")
def make_server(redis_url, tmp_path_factory):
    started: list[ServerThread] = []

    def make(prefix: str, **overrides) -> ServerThread:
        values = dict(host="127.0.0.1", grpc_port=0, http_port=0, redis_url=redis_url, key_prefix=prefix,
                      data_dir=tmp_path_factory.mktemp("data"), api_keys=API_KEY, camera_tokens=TOKENS,
                      grpc_grace_s=0.5, enhancement_timeout_s=5.0)
        values.update(overrides)
        server = ServerThread(ServerSettings(**values))
        started.append(server)
        return server

    yield make
    for s in started:
        if not s.loop.is_closed():  # a test may have stopped it already
            s.stop()


@pytest.fixture(scope="module")
def server(make_server) -> ServerThread:
    return make_server("dash")


@pytest.fixture(scope="session")
def samples(sample_faces) -> list[SampleFace]:
    from facecodec import base_layer

    return [SampleFace(p, f.feature, base_layer.encode(f.feature), f.chip) for p, f in sample_faces]
