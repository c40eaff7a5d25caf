"""One caller cannot make the server do unbounded work: live event streams, scans and Acks are capped.

The attacks (issue 15, item 5), over real HTTP and real gRPC streams against a real server and
redis-server:

- 300 ``/events/live?after=0-0`` connections that never read made ``/stats`` take 38 s with Redis
  read timeouts: live streams are now capped per caller (429) and in all (503), and the events
  replayed on connect are bounded (``FACESERVER_EVENTS_BACKLOG_MAX``);
- ``/faces?matched=false`` scanned the whole index (9.7 s at 16k faces) and ``/search`` with
  ``max_scan=10000000`` took 7.7 s: every scan stops at ``FACESERVER_SCAN_MAX`` entries or after
  ``FACESERVER_SCAN_TIME_S`` and says so (``truncated``, ``next_offset``);
- one 4 MB batch of 31,300 invalid observations made a 5.7 MB Ack, over the server's own send cap,
  which killed the stream: an Ack's rejections now stay under half the message cap, the rest
  summed up in one rejection.
"""

from __future__ import annotations

import base64
import time

import grpc
import httpx
import pytest
import redis
from server_testkit import API_KEY, Edge, observation

from analysis_server.keys import Keys
from facewire.v1 import ingest_pb2 as pb

pytestmark = pytest.mark.slow

OTHER_KEY = "second-api-key-0002"


def test_live_event_streams_are_capped_per_caller_and_in_all(make_server):
    server = make_server(api_keys=f"{API_KEY},{OTHER_KEY}", events_live_per_caller=2, events_live_max=3)
    opened = []
    try:
        def stream(key: str) -> httpx.Response:
            client = httpx.Client(base_url=server.http_url, headers={"X-API-Key": key}, timeout=10)
            r = client.send(client.build_request("GET", "/events/live", params={"after": "0-0"}), stream=True)
            opened.append((client, r))
            return r

        assert [stream(API_KEY).status_code for _ in range(2)] == [200, 200]  # ... and never read
        third = stream(API_KEY)
        assert third.status_code == 429 and third.headers["retry-after"]
        assert stream(OTHER_KEY).status_code == 200  # another caller is not held up by the first
        assert stream(OTHER_KEY).status_code == 503  # but the server's total is reached
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=10) as api:
            assert api.get("/stats").status_code == 200
        for client, r in opened[:2]:  # a caller that closes its streams gets its slots back
            r.close()
            client.close()
        deadline = time.monotonic() + 10
        while server.services.live._slots and len(server.services.live._slots) > 1:
            assert time.monotonic() < deadline, "closed streams kept their slots"
            time.sleep(0.05)
        assert stream(API_KEY).status_code == 200
    finally:
        for client, r in opened:
            r.close()
            client.close()


def test_the_events_replayed_on_connect_are_bounded(make_server, redis_url):
    server = make_server(events_backlog_max=10)
    r = redis.Redis.from_url(redis_url)
    key = Keys(server.settings.key_prefix).events
    for i in range(50):
        r.xadd(key, {"type": "observation", "face_id": f"bk-{i}", "camera_id": "cam-1"})
    r.close()
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=10) as c:
        with c.stream("GET", "/events/live", params={"after": "0-0", "keepalive_s": 0.5}) as resp:
            replayed = []
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    replayed.append(line)
                if line.startswith(": keepalive"):
                    break
    assert len(replayed) == 10 and "bk-49" in replayed[-1]  # the newest ten, oldest first


@pytest.fixture
def matched_index(make_server, samples):
    """A server holding ``faces`` faces (1,200) of camera cam-1, every one matched to one identity, and a
    camera cam-2 that streamed none (so ``identity=<it>&camera=cam-2`` must skip them all); its
    identity id is ``server.everyone``."""
    def start(faces: int = 1200, **settings):
        server = make_server(**settings)
        s = samples[0]
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
            enrol = {"name": "Everyone", "features": [{"base_layer": base64.b64encode(s.base).decode()}]}
            r = api.post("/identities", json=enrol)
            assert r.status_code == 201
            server.everyone = r.json()["identity_id"]
        edge, other = Edge(server.grpc_target, "cam-1"), Edge(server.grpc_target, "cam-2")
        try:
            edge.hello()
            other.hello()
            t = int(time.time() * 1000)
            for first in range(0, faces, 600):
                n = min(600, faces - first)
                ack = edge.send(*[observation(f"m-{i:05d}", s.base, t_ms=t - i) for i in range(first, first + n)])
                assert len(ack.face_ids) == n
        finally:
            edge.close()
            other.close()
        return server
    return start


def test_a_filter_that_matches_nothing_stops_at_the_scan_bound(matched_index):
    server = matched_index(scan_max=700, history_index=False)  # /search scans (the index would not)
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        # matched=false has its own time index: nothing to skip, whatever is stored
        assert api.get("/faces", params={"matched": "false", "limit": 10}).json() == \
            {"items": [], "next_cursor": None, "next_offset": None, "truncated": False}
        # an identity's faces on another camera: its index is read and each face's camera checked
        q = {"identity": server.everyone, "camera": "cam-2", "limit": 10}
        page = api.get("/faces", params=q).json()
        assert page["items"] == [] and page["truncated"] is True and page["next_cursor"]
        rest = api.get("/faces", params={**q, "cursor": page["next_cursor"]}).json()
        assert rest == {"items": [], "next_cursor": None, "next_offset": None, "truncated": False}  # it can go on
        found = api.post("/search", json={"probe": {"face_id": "m-00000"}, "max_scan": 10_000_000}).json()
        assert found["scanned"] == 700 and found["truncated"] is True and found["index"] == "exact-scan"


def test_scans_stop_at_the_time_bound(matched_index):
    server = matched_index(faces=5000, scan_time_s=1e-6, history_index=False)  # past it after the first chunk
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        page = api.get("/faces", params={"identity": server.everyone, "camera": "cam-2", "limit": 10}).json()
        assert page["truncated"] is True and page["next_cursor"]
        found = api.post("/search", json={"probe": {"face_id": "m-00000"}}).json()
        assert found["truncated"] is True and 0 < found["scanned"] < 5000


def test_the_search_index_answers_without_a_scan(matched_index):
    server = matched_index(scan_max=700)
    server.call(server.services.history.ready.wait(), timeout=120)
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        found = api.post("/search", json={"probe": {"face_id": "m-00000"}, "limit": 1000}).json()
        # 1,200 faces of one base layer: every one at distance 0, found by the index whatever scan_max says
        assert found["index"] == "faiss-ivf-pq" and found["truncated"] is False and len(found["hits"]) == 1000
        assert found["next_offset"] == 1000
        rest = api.post("/search", json={"probe": {"face_id": "m-00000"}, "limit": 1000, "offset": 1000}).json()
        assert len(rest["hits"]) == 200 and rest["next_offset"] is None
        assert {h["face_id"] for h in found["hits"] + rest["hits"]} == {f"m-{i:05d}" for i in range(1200)}


def test_a_batch_of_invalid_observations_gets_an_ack_under_the_message_cap(make_server):
    limit = 64 * 1024
    server = make_server(grpc_max_message_bytes=limit)
    edge = Edge(server.grpc_target, "cam-1")
    try:
        edge.hello()
        junk = [pb.FaceObservation(face_id=f"x{i:05d}" + "y" * 120, camera_id="cam-1") for i in range(420)]
        sent = pb.EdgeMessage(observations=pb.ObservationBatch(observations=junk))
        assert sent.ByteSize() < limit
        edge._out.put(sent)
        ack = edge.next_ack(30)
        assert ack.ByteSize() <= limit and not ack.face_ids
        named = [r for r in ack.rejected if r.face_id]
        assert 0 < len(named) < 420 and ack.rejected[-1].face_id == ""
        assert f"{420 - len(named)} more observations were rejected" in ack.rejected[-1].reason
        assert list(edge.send(observation("after-junk", b"")).rejected)  # the stream is still up
    finally:
        edge.close()
