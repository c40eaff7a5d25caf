"""Wrong credentials are throttled per client and per camera, and nobody can turn that on a valid one.

The attacks (issue 15, item 3), over real HTTP and real gRPC streams on loopback:

- **Bypass**: uvicorn believed ``X-Forwarded-For`` from 127.0.0.1, so 300 wrong keys each sent
  "from" a different forged address were never counted together.
- **Denial of service**: 25 wrong keys sent "as" a victim's address (the same header) locked the
  victim's valid key out (429, Retry-After 300), and from one address 22 wrong camera tokens
  locked a new stream with the correct token out for 300 s: behind a proxy or a site's NAT one
  attacker locked out every operator and camera.

Now ``X-Forwarded-For`` counts only from proxies named in ``FACESERVER_TRUSTED_PROXIES``;
failures are counted per client (an IPv4 address, an IPv6 /64, IPv4-mapped addresses as IPv4)
and, for camera tokens, per camera id; past the limit a client's (or camera's) *wrong*
credentials get 429 / ``RESOURCE_EXHAUSTED`` after a delay, while a valid key or token is
served at once.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest
from server_testkit import API_KEY, TOKENS

from analysis_server.auth import FailureLimiter, client_bucket, peer_address
from facewire.v1 import ingest_pb2 as pb
from facewire.v1 import ingest_pb2_grpc

pytestmark = pytest.mark.slow
LIMIT = 3


@pytest.fixture
def server(make_server):
    return make_server(auth_fail_limit=LIMIT, auth_fail_window_s=600, auth_lockout_s=600, auth_fail_delay_s=0.2)


def test_wrong_keys_are_throttled_but_a_valid_key_from_the_same_address_is_always_served(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as c:
        for _ in range(5):  # no key at all guesses nothing: refused, not counted
            assert c.get("/stats").status_code == 401
        for i in range(LIMIT):
            headers = {"X-API-Key": f"guess-{i:08d}"} if i % 2 else {"Authorization": f"Bearer guess-{i:08d}"}
            assert c.get("/faces", headers=headers).status_code in (401, 429)
        for _ in range(3):  # the operator behind the same address is not locked out
            assert c.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200
        throttled = c.get("/faces", headers={"X-API-Key": "guess-last-1"})
        assert throttled.status_code == 429 and 0 < int(throttled.headers["retry-after"]) <= 600
        assert "too many failed authentication attempts" in throttled.json()["detail"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        # The dashboard's login form: wrong keys throttled, the valid key logs in.
        assert c.post("/ui/login", data={"api_key": "guess-login-1", "next": "/ui"}).status_code == 429
        assert c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui"}).status_code == 303


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(make_server):
    plain = make_server(auth_fail_limit=LIMIT, auth_fail_window_s=600, auth_lockout_s=600, auth_fail_delay_s=0)
    with httpx.Client(base_url=plain.http_url, timeout=10) as c:
        answers = [c.get("/faces", headers={"X-API-Key": f"guess-{i:08d}", "X-Forwarded-For": f"203.0.113.{i}"}
                         ).status_code for i in range(LIMIT + 2)]
        assert answers == [401] * (LIMIT - 1) + [429] * 3  # one client, whatever the header says
        # ... and forging a victim's address does not touch the victim: its valid key still works.
        assert c.get("/stats", headers={"X-API-Key": API_KEY, "X-Forwarded-For": "203.0.113.0"}).status_code == 200

    proxied = make_server(auth_fail_limit=LIMIT, auth_fail_window_s=600, auth_lockout_s=600, auth_fail_delay_s=0,
                          trusted_proxies="127.0.0.1")
    with httpx.Client(base_url=proxied.http_url, timeout=10) as c:
        def wrong(client_ip: str) -> int:
            return c.get("/faces", headers={"X-API-Key": "guess-proxy", "X-Forwarded-For": client_ip}).status_code

        assert [wrong("198.51.100.7") for _ in range(LIMIT + 1)] == [401] * (LIMIT - 1) + [429] * 2
        assert wrong("198.51.100.8") == 401  # the proxy's other clients are counted on their own
        assert wrong("::ffff:198.51.100.7") == 429  # IPv4-mapped: the same client
        assert [wrong(f"2001:db8:1:2::{i:x}") for i in range(1, LIMIT + 2)] == [401] * (LIMIT - 1) + [429] * 2
        assert wrong("2001:db8:1:2:ffff::1") == 429  # the same /64
        assert wrong("2001:db8:1:3::1") == 401  # the next /64


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


def test_wrong_camera_tokens_are_throttled_but_the_camera_with_its_token_always_connects(server):
    good = (("x-camera-id", "cam-1"), ("authorization", f"Bearer {TOKENS['cam-1']}"))
    assert _stream_status(server.grpc_target, good) == grpc.StatusCode.OK  # hello only: the stream ends cleanly
    for _ in range(5):
        assert _stream_status(server.grpc_target, (("x-camera-id", "cam-1"),)) == grpc.StatusCode.UNAUTHENTICATED
    for i in range(LIMIT):
        wrong = (("x-camera-id", "cam-1"), ("authorization", f"Bearer guess-{i:08d}"))
        assert _stream_status(server.grpc_target, wrong) in (grpc.StatusCode.UNAUTHENTICATED,
                                                             grpc.StatusCode.RESOURCE_EXHAUSTED)
    for _ in range(3):  # the real camera, from the same address, still streams
        assert _stream_status(server.grpc_target, good) == grpc.StatusCode.OK
    assert _stream_status(server.grpc_target, (("x-camera-id", "cam-1"), ("authorization", "Bearer guess-x"))) \
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    other = (("x-camera-id", "cam-2"), ("authorization", f"Bearer {TOKENS['cam-2']}"))
    assert _stream_status(server.grpc_target, other) == grpc.StatusCode.OK
    with httpx.Client(base_url=server.http_url, timeout=10) as c:  # REST counts on its own
        assert c.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200


def test_throttling_ends_after_its_period_and_old_failures_leave_the_window():
    now = [1000.0]
    limiter = FailureLimiter(limit=3, window_s=60, lockout_s=300, clock=lambda: now[0])
    assert not limiter.failed("a") and not limiter.failed("a")
    now[0] += 61  # the window has passed: counting starts again
    assert not limiter.failed("a") and not limiter.failed("a")
    assert limiter.failed("a") and limiter.retry_after("a") == 300
    assert limiter.retry_after("b") == 0  # per key
    now[0] += 299
    assert limiter.retry_after("a") == pytest.approx(1)
    now[0] += 1
    assert limiter.retry_after("a") == 0
    assert not limiter.failed("a")  # a fresh window after the throttling


def test_limiter_off_bounded_in_memory_and_holds_few_answers_at_once():
    off = FailureLimiter(limit=0, window_s=60, lockout_s=60)
    assert not any(off.failed("a") for _ in range(1000)) and off.retry_after("a") == 0
    small = FailureLimiter(limit=2, window_s=60, lockout_s=60, max_keys=10)
    for i in range(1000):
        small.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(small._failures) <= 10

    async def held_at_once() -> float:
        slow = FailureLimiter(limit=1, window_s=60, lockout_s=60, delay_s=0.5, max_held=2)
        t0 = time.monotonic()
        await asyncio.gather(*(slow.hold("a") for _ in range(50)))  # 2 wait, 48 are answered at once
        return time.monotonic() - t0

    assert asyncio.run(held_at_once()) < 5


@pytest.mark.parametrize(("peer", "address"), [("ipv4:127.0.0.1:50123", "127.0.0.1"),
                                               ("ipv6:[::1]:50123", "::1"), ("ipv6:%5B::1%5D:5", "::1"),
                                               ("unix:/tmp/s.sock", "unix:/tmp/s.sock"), ("", "unknown")])
def test_peer_address_drops_the_port(peer, address):
    assert peer_address(peer) == address


@pytest.mark.parametrize(("address", "bucket"), [("192.0.2.7", "192.0.2.7"), ("::ffff:192.0.2.7", "192.0.2.7"),
                                                 ("2001:db8:a:b:1:2:3:4", "2001:db8:a:b::/64"),
                                                 ("2001:db8:a:b::9", "2001:db8:a:b::/64"), ("::1", "::/64"),
                                                 ("fe80::1%eth0", "fe80::/64"), ("unix:/s", "unix:/s")])
def test_clients_are_counted_per_ipv4_address_and_ipv6_64(address, bucket):
    assert client_bucket(address) == bucket
