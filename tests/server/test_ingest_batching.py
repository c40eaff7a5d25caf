"""Batches handled together (read ahead on a stream, base layers of several streams decoded at once)
give each ObservationBatch the Ack, rejections, records and events it gets when handled alone."""

from __future__ import annotations

import threading

import pytest
from server_testkit import observation, stored_face, stored_face_ids

from analysis_server.edge_link import CameraSession
from analysis_server.grpc_service import IngestServicer
from analysis_server.keys import Keys
from facewire.v1 import ingest_pb2 as pb

pytestmark = pytest.mark.slow


def batch(*observations: pb.FaceObservation) -> pb.ObservationBatch:
    return pb.ObservationBatch(observations=observations)


def corrupt(base: bytes) -> bytes:
    return base[:-1] + bytes([base[-1] ^ 0x01])  # the checksum catches it


def observation_events(redis_client, keys: Keys) -> list[bytes]:
    return [e[b"face_id"] for _, e in redis_client.xrange(keys.events) if e[b"type"] == b"observation"]


def test_batches_handled_together_get_the_acks_they_get_alone(make_server, api_for, samples, redis_client):
    server = make_server(max_batch=3)
    api = api_for(server)
    person = samples[0].person
    same = [s for s in samples if s.person == person]
    ident = api.post("/identities", json={"name": person, "watchlist": True,
                                          "features": [{"feature": same[0].feature.tolist()}]}).json()
    other = [s for s in samples if s.person != person]
    b1 = batch(observation("a-1", other[0].base), observation("a-bad", other[1].base, box=pb.Box(x1=5, y1=5, x2=1, y2=9)),
               observation("a-1", other[0].base), observation("a-over", other[2].base))
    b2 = batch(observation("a-1", other[0].base), observation("hit-1", same[1].base))
    b3 = batch(observation("c-bad", corrupt(other[3].base)), observation("c-1", other[4].base))
    servicer = IngestServicer(server.services)
    acks = server.call(servicer.handle_batches([b1, b2, b3], CameraSession("cam-1", "test")))

    assert [list(a.face_ids) for a in acks] == [["a-1"], ["a-1", "hit-1"], ["c-1"]]
    assert [(r.face_id, r.reason.split(":")[0]) for r in acks[0].rejected] == [("a-over", "batch"), ("a-bad", "box")]
    assert list(acks[1].rejected) == []
    assert [(r.face_id, r.reason.split(":")[0]) for r in acks[2].rejected] == [("c-bad", "base_layer")]
    assert "checksum" in acks[2].rejected[0].reason

    keys = Keys(server.settings.key_prefix)
    assert stored_face_ids(redis_client, keys.prefix) == ["a-1", "c-1", "hit-1"]
    assert sorted(observation_events(redis_client, keys)) == [b"a-1", b"c-1", b"hit-1"]  # a-1 stored once
    hits = [e for _, e in redis_client.xrange(keys.events) if e[b"type"] == b"watchlist_hit"]
    assert [(h[b"face_id"], h[b"identity_id"].decode()) for h in hits] == [(b"hit-1", ident["identity_id"])]
    assert stored_face(redis_client, keys.prefix, "hit-1")["identity"].decode() == ident["identity_id"]


def test_batches_sent_back_to_back_are_acked_in_order(server, edges, samples, redis_client):
    edge = edges("cam-1")
    sent = []
    for k in range(12):
        ids = [f"b{k}-{j}" for j in range(5)]
        sent.append(ids)
        edge._out.put(pb.EdgeMessage(observations=batch(*(observation(f, samples[(k + j) % len(samples)].base)
                                                        for j, f in enumerate(ids)))))
    assert [list(edge.next_ack().face_ids) for _ in sent] == sent
    keys = Keys(server.settings.key_prefix)
    assert len(stored_face_ids(redis_client, keys.prefix)) == 60
    assert server.call(server.services.store.camera_counts(["cam-1"])) == {"cam-1": 60}


def test_two_cameras_streaming_at_once_each_get_their_own_acks(server, edges, samples, redis_client):
    cams = {c: edges(c) for c in ("cam-1", "cam-2")}
    got: dict[str, list[list[str]]] = {}

    def stream(camera: str) -> None:
        edge = cams[camera]
        for k in range(8):
            edge._out.put(pb.EdgeMessage(observations=batch(
                *(observation(f"{camera}-{k}-{j}", samples[j].base, camera_id=camera) for j in range(6)))))
        got[camera] = [list(edge.next_ack().face_ids) for _ in range(8)]

    threads = [threading.Thread(target=stream, args=(c,)) for c in cams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in cams:
        assert got[c] == [[f"{c}-{k}-{j}" for j in range(6)] for k in range(8)]
    keys = Keys(server.settings.key_prefix)
    assert server.call(server.services.store.camera_counts(["cam-1", "cam-2"])) == {"cam-1": 48, "cam-2": 48}
    assert len(stored_face_ids(redis_client, keys.prefix)) == 96


def test_batches_are_stored_after_redis_forgets_the_script_or_drops_the_connections(server, edges, samples,
                                                                                    redis_client):
    edge = edges("cam-1")
    assert list(edge.send(observation("r-1", samples[0].base)).face_ids) == ["r-1"]
    redis_client.script_flush()
    assert list(edge.send(observation("r-2", samples[1].base)).face_ids) == ["r-2"]
    assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1  # the server's pooled connections too
    assert list(edge.send(observation("r-3", samples[2].base)).face_ids) == ["r-3"]
    keys = Keys(server.settings.key_prefix)
    assert stored_face_ids(redis_client, keys.prefix) == ["r-1", "r-2", "r-3"]


def test_a_stored_record_reads_back_field_by_field(server, edges, samples):
    o = observation("rt-1", samples[0].base, box=pb.Box(x1=10.125, y1=20.3333, x2=110.5, y2=140.0),
                    quality=pb.Quality(probability=0.875, face_size=99.5, fallback=True), track_id="trk.1:a@b-c")
    edges("cam-1").send(o)
    face = server.call(server.services.store.get("rt-1"))
    assert face.box == (10.125, pytest.approx(20.3333), 110.5, 140.0)
    assert (face.probability, face.face_size, face.fallback, face.track_id) == (0.875, 99.5, True, "trk.1:a@b-c")
    assert face.base_layer == samples[0].base and face.camera_id == "cam-1"


@pytest.fixture
def api_for():
    """REST clients of servers made with non-default settings (closed after the test)."""
    import httpx
    from server_testkit import API_KEY

    clients: list[httpx.Client] = []

    def make(server) -> httpx.Client:
        clients.append(httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30))
        return clients[-1]

    yield make
    for c in clients:
        c.close()
