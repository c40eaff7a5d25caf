"""One camera, one stream: an impostor cannot take over a live camera's stream.

The attack (issue 15, item 4): with a token that admits camera ``lobby`` (a wildcard token, or
the camera's own token copied from its edge), a second gRPC stream claiming ``lobby`` replaced
the real edge's stream. From then on ``layer=full`` requests went to the impostor, the
``DropTexture`` of an erasure went to the impostor (the real edge kept the face's texture), and
once the impostor left the server called the camera offline (504) although the real edge was
still connected and acking.

Now a second stream for a camera whose stream is live (on this replica or another one) is
refused with ``ALREADY_EXISTS``; requests and drops keep reaching the real edge, and a texture
drop stays queued in Redis until the owning edge confirms it. Real server, real redis-server,
real gRPC streams, real HTTP.
"""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
import redis
from server_testkit import API_KEY, Edge, observation

from analysis_server.keys import Keys
from testkit.processes import wait_until

pytestmark = pytest.mark.slow

LOBBY_TOKEN = "lobby-token-0001"
WILDCARD = "wildcard-token-01"
TOKENS = {"lobby": LOBBY_TOKEN, "*": WILDCARD}


def _connect(server, camera_id: str, token: str, wait_online: bool = True, **kw) -> Edge:
    edge = Edge(server.grpc_target, camera_id, token=token, **kw)
    edge.hello()
    if wait_online:
        wait_until(lambda: server.services.link.session(camera_id) is not None or edge.closed.is_set(), 10,
                   "the server to hold the stream")
        assert not edge.closed.is_set(), f"the stream was refused: {edge.error}"
    return edge


def _online(api: httpx.Client, camera_id: str) -> bool:
    return {c["camera_id"]: c["online"] for c in api.get("/cameras").json()}.get(camera_id, False)


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_an_impostor_stream_is_refused_and_requests_and_drops_reach_the_real_edge(make_server, samples,
                                                                                   redis_client):
    server = make_server(camera_tokens=TOKENS, enhancement_timeout_s=5.0)
    s = samples[0]
    real = _connect(server, "lobby", LOBBY_TOKEN, textures={"own-1": (s.chip, s.base)})
    opened = [real]
    try:
        assert list(real.send(observation("own-1", s.base, camera_id="lobby")).face_ids) == ["own-1"]
        for token in (WILDCARD, LOBBY_TOKEN):  # the wildcard, and the camera's own token copied
            impostor = _connect(server, "lobby", token, wait_online=False)
            opened.append(impostor)
            assert impostor.closed.wait(10), "the impostor's stream was accepted"
            assert impostor.error is not None and impostor.error.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "already has a live stream" in impostor.error.details()
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
            r = api.get("/faces/own-1/image", params={"layer": "full"})
            assert r.status_code == 200, r.text
            assert [q.face_id for q in list(real.requests.queue)] == ["own-1"]  # the real edge was asked
            assert _online(api, "lobby")
            assert api.delete("/faces/own-1").json()["texture_drop_sent"] is True
            assert real.drops.get(timeout=10) == ["own-1"]  # the real edge dropped it
            assert "own-1" not in real.textures
            key = Keys(server.settings.key_prefix).pending_drops("lobby")
            wait_until(lambda: not redis_client.exists(key), 10, "the edge to confirm the drop")
            for e in opened[1:]:
                e.close()
            assert _online(api, "lobby")  # the impostors left: the real edge is still the camera
            assert list(real.send(observation("own-2", samples[1].base, camera_id="lobby")).face_ids) == ["own-2"]
    finally:
        for e in opened:
            e.close()


def test_a_texture_drop_stays_queued_until_the_owning_edge_confirms_it(make_server, samples, redis_client):
    server = make_server(enhancement_timeout_s=1.0)
    s = samples[0]
    deaf = _connect(server, "cam-1", "token-cam-1", textures={"keep-1": (s.chip, s.base)}, mode="silent")
    deaf.send(observation("keep-1", s.base))
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.delete("/faces/keep-1").status_code == 200
    assert deaf.drops.get(timeout=10) == ["keep-1"]  # sent, but this edge never confirms anything
    key = Keys(server.settings.key_prefix).pending_drops("cam-1")
    time.sleep(2.0)  # past the 1 s confirmation timeout
    assert redis_client.smembers(key) == {b"keep-1"}
    deaf.close()
    again = _connect(server, "cam-1", "token-cam-1")
    try:
        assert again.drops.get(timeout=10) == ["keep-1"]  # sent again when the camera reconnects
        wait_until(lambda: not redis_client.exists(key), 10, "the reconnected edge to confirm the drop")
    finally:
        again.close()


def test_a_second_stream_on_another_replica_is_refused_while_the_first_is_live(make_server, samples,
                                                                               redis_client):
    a = make_server(prefix="own-x", replica_id="replica-a")
    b = make_server(prefix="own-x", replica_id="replica-b")
    first = _connect(a, "cam-1", "token-cam-1")
    try:
        second = _connect(b, "cam-1", "token-cam-1", wait_online=False)
        assert second.closed.wait(10), "replica B accepted a second stream for cam-1"
        assert second.error.code() == grpc.StatusCode.ALREADY_EXISTS and "replica-a" in second.error.details()
        first.close()
        wait_until(lambda: a.services.link.session("cam-1") is None, 10, "replica A to release cam-1")
        third = _connect(b, "cam-1", "token-cam-1")  # the camera is free again: B takes it
        assert list(third.send(observation("rb-1", samples[0].base)).face_ids) == ["rb-1"]
        third.close()
    finally:
        first.close()
    # An owner key left by a replica that was SIGKILLed (nobody listens on its channel) does not
    # lock its cameras out until the key expires.
    key = Keys("own-x").camera_owner("cam-2")
    redis_client.set(key, "replica-killed", px=60_000)
    edge = _connect(b, "cam-2", "token-cam-2")
    try:
        assert redis_client.get(key) == b"replica-b"
    finally:
        edge.close()
