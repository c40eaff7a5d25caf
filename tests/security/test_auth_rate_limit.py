"""Authentication failures lock a client address out, over real HTTP and a real gRPC channel."""

from __future__ import annotations

import grpc
import httpx
import pytest
from server_testkit import API_KEY, TOKENS

from analysis_server.auth import FailureLimiter, peer_address
from facewire.v1 import ingest_pb2 as pb
from facewire.v1 import ingest_pb2_grpc

pytestmark = pytest.mark.slow
LIMIT = 3


@pytest.fixture
def server(make_server):
    return make_server(auth_fail_limit=LIMIT, auth_fail_window_s=600, auth_lockout_s=600)


def test_rest_answers_429_to_an_address_after_too_many_wrong_keys_even_with_a_valid_key(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as c:
        for _ in range(5):  # no key at all guesses nothing: refused, not counted
            assert c.get("/stats").status_code == 401
        assert c.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200
        for i in range(LIMIT):
            headers = {"X-API-Key": f"guess-{i:08d}"} if i % 2 else {"Authorization": f"Bearer guess-{i:08d}"}
            assert c.get("/faces", headers=headers).status_code == 401
        locked = c.get("/stats", headers={"X-API-Key": API_KEY})
        assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 600
        assert "too many failed authentication attempts" in locked.json()["detail"]
        assert c.get("/faces", headers={"X-API-Key": "guess-again-1"}).status_code == 429
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open


def test_dashboard_login_failures_count_toward_the_lockout(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as c:
        for i in range(LIMIT):
            assert c.post("/ui/login", data={"api_key": f"guess-{i:08d}", "next": "/ui"}).status_code == 401
        assert c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui"}).status_code == 429


def _stream_status(target: str, metadata) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        call = ingest_pb2_grpc.FaceIngestStub(channel).Stream(
            iter([pb.EdgeMessage(hello=pb.Hello(camera_id="cam-1", agent_version="t"))]), metadata=metadata, timeout=10)
        try:
            for _ in call:
                pass
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def test_grpc_answers_resource_exhausted_to_an_address_after_too_many_wrong_tokens(server):
    good = (("x-camera-id", "cam-1"), ("authorization", f"Bearer {TOKENS['cam-1']}"))
    assert _stream_status(server.grpc_target, good) == grpc.StatusCode.OK  # hello only: the stream ends cleanly
    for _ in range(5):
        assert _stream_status(server.grpc_target, (("x-camera-id", "cam-1"),)) == grpc.StatusCode.UNAUTHENTICATED
    for i in range(LIMIT):
        wrong = (("x-camera-id", "cam-1"), ("authorization", f"Bearer guess-{i:08d}"))
        assert _stream_status(server.grpc_target, wrong) == grpc.StatusCode.UNAUTHENTICATED
    assert _stream_status(server.grpc_target, good) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _stream_status(server.grpc_target, (("x-camera-id", "cam-1"), ("authorization", "Bearer guess-x"))) \
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    with httpx.Client(base_url=server.http_url, timeout=10) as c:  # REST counts on its own
        assert c.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200


def test_lockout_ends_after_its_period_and_old_failures_leave_the_window():
    now = [1000.0]
    limiter = FailureLimiter(limit=3, window_s=60, lockout_s=300, clock=lambda: now[0])
    assert not limiter.failed("a") and not limiter.failed("a")
    now[0] += 61  # the window has passed: counting starts again
    assert not limiter.failed("a") and not limiter.failed("a")
    assert limiter.failed("a") and limiter.retry_after("a") == 300
    assert limiter.retry_after("b") == 0  # per address
    now[0] += 299
    assert limiter.retry_after("a") == pytest.approx(1)
    now[0] += 1
    assert limiter.retry_after("a") == 0 and not limiter.any_locked
    assert not limiter.failed("a")  # a fresh window after the lockout


def test_limiter_off_and_bounded_in_memory():
    off = FailureLimiter(limit=0, window_s=60, lockout_s=60)
    assert not any(off.failed("a") for _ in range(1000)) and off.retry_after("a") == 0
    small = FailureLimiter(limit=2, window_s=60, lockout_s=60, max_addresses=10)
    for i in range(1000):
        small.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(small._failures) <= 10


@pytest.mark.parametrize(("peer", "address"), [("ipv4:127.0.0.1:50123", "127.0.0.1"),
                                               ("ipv6:[::1]:50123", "::1"), ("ipv6:%5B::1%5D:5", "::1"),
                                               ("unix:/tmp/s.sock", "unix:/tmp/s.sock"), ("", "unknown")])
def test_peer_address_drops_the_port(peer, address):
    assert peer_address(peer) == address
