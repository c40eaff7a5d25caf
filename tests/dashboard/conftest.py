"""Fixtures of the dashboard tests: an analysis server per module (in a thread, or a real process
for the browser test) on the session's redis-server, and real edge-side gRPC clients
(tests/server_testkit.py)."""

from __future__ import annotations

import pytest
from server_testkit import ServerFactory, ServerThread


@pytest.fixture(scope="module")
def make_server(redis_url, tmp_path_factory):
    factory = ServerFactory(redis_url, tmp_path_factory.mktemp("data"))
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def server(make_server) -> ServerThread:
    return make_server("dash")
