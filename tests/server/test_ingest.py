"""gRPC ingest over a real channel into a real Redis: auth, acks, idempotence, validation, health."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_testkit import Edge, observation, stored_face, stored_face_ids

from analysis_server.keys import Keys
from analysis_server.records import period_of
from facecodec import base_layer
from facewire.v1 import ingest_pb2 as pb

pytestmark = pytest.mark.slow


def test_stream_without_token_is_refused_unauthenticated(server):
    edge = Edge(server.grpc_target, "cam-1", token="")
    assert edge.closed.wait(10)
    assert edge.error is not None and edge.error.code() == grpc.StatusCode.UNAUTHENTICATED
    edge.close()


def test_token_of_another_camera_is_refused(server):
    edge = Edge(server.grpc_target, "cam-2", token="token-cam-1")
    assert edge.closed.wait(10)
    assert edge.error.code() == grpc.StatusCode.UNAUTHENTICATED
    edge.close()


def test_wildcard_token_admits_any_camera_id(make_server, samples):
    server = make_server(camera_tokens={"*": "fleet-token-1"})
    edge = Edge(server.grpc_target, "gate-7", token="fleet-token-1")
    ack = edge.send(observation("w-1", samples[0].base, camera_id="gate-7"))
    assert list(ack.face_ids) == ["w-1"]
    edge.close()


def test_batch_is_acked_and_stored_with_its_decoded_feature(server, edges, samples, redis_client):
    edge = edges("cam-1")
    obs = [observation(f"f-{i}", s.base) for i, s in enumerate(samples[:5])]
    ack = edge.send(*obs)
    assert list(ack.face_ids) == [f"f-{i}" for i in range(5)] and not ack.rejected
    keys = Keys(server.settings.key_prefix)
    for i, s in enumerate(samples[:5]):
        h = stored_face(redis_client, keys.prefix, f"f-{i}")
        assert h["camera"] == b"cam-1" and h["base"] == s.base  # the base layer is the only copy of the feature
        face = server.call(server.services.store.get(f"f-{i}"))
        np.testing.assert_allclose(face.feature, base_layer.decode(s.base).feature, atol=1e-6)
        p = period_of(int(h["t"]))
        assert redis_client.zscore(keys.camera_index("cam-1", False, p), f"f-{i}") is not None
    events = redis_client.xrange(keys.events)
    assert [e[1][b"face_id"] for e in events] == [f"f-{i}".encode() for i in range(5)]


def test_replayed_observations_are_acked_but_stored_once(server, edges, samples, redis_client):
    edge = edges("cam-1")
    obs = [observation(f"r-{i}", s.base) for i, s in enumerate(samples[:3])]
    first = edge.send(*obs)
    again = edge.send(*obs, observation("r-3", samples[3].base))
    assert list(first.face_ids) == ["r-0", "r-1", "r-2"]
    assert list(again.face_ids) == ["r-0", "r-1", "r-2", "r-3"]
    keys = Keys(server.settings.key_prefix)
    assert stored_face_ids(redis_client, keys.prefix) == ["r-0", "r-1", "r-2", "r-3"]
    assert server.call(server.services.store.count_faces()) == (4, 0)
    assert redis_client.xlen(keys.events) == 4  # one observation event per face, not per delivery
    assert server.services.metrics.observations.labels("duplicate")._value.get() == 3


def test_invalid_observations_are_rejected_and_the_stream_stays_up(server, edges, samples, redis_client):
    edge = edges("cam-1")
    good = samples[0].base
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    now = int(time.time() * 1000)
    bad = [
        observation("bad-crc", bytes(corrupt)),
        observation("bad-trunc", good[:4]),
        observation("bad-box", good, box=pb.Box(x1=50, y1=50, x2=10, y2=90)),
        observation("bad-prob", good, quality=pb.Quality(probability=1.5, face_size=50)),
        observation("bad-cam", good, camera_id="cam-2"),
        observation("bad-time", good, t_ms=now + 10 * 24 * 3600 * 1000),
        observation("bad/id", good),
        observation("bad-version", good, format_version=7),
        observation("bad-backend", good, feature_backend="facenet-vggface2-512"),
    ]
    ack = edge.send(observation("ok-1", good), *bad)
    assert list(ack.face_ids) == ["ok-1"]
    reasons = {r.face_id: r.reason for r in ack.rejected}
    assert set(reasons) == {o.face_id for o in bad}
    assert reasons["bad-crc"].startswith("base_layer:") and "corrupted" in reasons["bad-crc"]
    assert reasons["bad-box"].startswith("box:") and reasons["bad-cam"].startswith("camera_id:")
    assert reasons["bad-time"].startswith("capture_time_ms:") and reasons["bad/id"].startswith("face_id:")
    fields = {r.face_id: r.field for r in ack.rejected}  # machine-readable: the field at fault, beside the text
    assert fields == {"bad-crc": "base_layer", "bad-trunc": "base_layer", "bad-box": "box",
                      "bad-prob": "quality.probability", "bad-cam": "camera_id", "bad-time": "capture_time_ms",
                      "bad/id": "face_id", "bad-version": "format_version", "bad-backend": "feature_backend"}
    assert all(r.reason.startswith(f"{r.field}: ") for r in ack.rejected)
    keys = Keys(server.settings.key_prefix)
    assert stored_face_ids(redis_client, keys.prefix) == ["ok-1"]
    # the same stream still works after the bad messages
    assert list(edge.send(observation("ok-2", good)).face_ids) == ["ok-2"]


def test_oversized_batch_is_cut_at_max_batch_with_rejections(make_server, samples):
    server = make_server(max_batch=3)
    edge = Edge(server.grpc_target, "cam-1")
    ack = edge.send(*[observation(f"m-{i}", samples[0].base) for i in range(5)])
    assert list(ack.face_ids) == ["m-0", "m-1", "m-2"]
    assert [r.face_id for r in ack.rejected] == ["m-3", "m-4"]
    edge.close()


def test_health_service_reports_serving(server):
    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", "facewire.v1.FaceIngest"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_watchlist_match_at_ingest_writes_a_hit_event(server, api, edges, samples, redis_client):
    person = samples[0].person
    same = [s for s in samples if s.person == person]
    other = next(s for s in samples if s.person != person)
    ident = api.post("/identities", json={"name": person, "watchlist": True,
                                          "features": [{"feature": same[0].feature.tolist()}]}).json()
    edge = edges("cam-1")
    edge.send(observation("hit-1", same[1].base), observation("miss-1", other.base))
    keys = Keys(server.settings.key_prefix)
    hits = [e[1] for e in redis_client.xrange(keys.events) if e[1][b"type"] == b"watchlist_hit"]
    assert [h[b"face_id"] for h in hits] == [b"hit-1"]
    assert hits[0][b"identity_id"].decode() == ident["identity_id"]
    assert float(hits[0][b"distance"]) <= server.settings.match_threshold
    assert stored_face(redis_client, keys.prefix, "hit-1")["identity"].decode() == ident["identity_id"]
    assert stored_face(redis_client, keys.prefix, "miss-1")["identity"] == b""


def test_face_records_are_deleted_by_the_sweep_after_retention(make_server, samples, redis_client):
    server = make_server(retention_s=2)
    edge = Edge(server.grpc_target, "cam-1")
    t = int(time.time() * 1000) - 1500  # captured 1.5 s ago: 0.5 s left
    assert list(edge.send(observation("old-1", samples[0].base, t_ms=t)).face_ids) == ["old-1"]
    keys = Keys(server.settings.key_prefix)
    assert server.call(server.services.store.sweep()) == 0  # not yet
    assert stored_face(redis_client, keys.prefix, "old-1") is not None
    time.sleep(0.8)
    removed = server.call(server.services.store.sweep())
    assert removed == 1 and stored_face(redis_client, keys.prefix, "old-1") is None
    p = period_of(t)
    assert redis_client.zcard(keys.camera_index("cam-1", False, p)) == 0
    assert all(redis_client.zcard(keys.all_index(sh, False, p)) == 0 for sh in range(16))
    too_old = edge.send(observation("old-2", samples[0].base, t_ms=int(time.time() * 1000) - 5000))
    assert not too_old.face_ids and too_old.rejected[0].reason.startswith("capture_time_ms:")
    edge.close()


def test_a_message_over_the_size_limit_ends_only_its_own_stream(make_server, samples):
    server = make_server(grpc_max_message_bytes=64 * 1024)
    big = Edge(server.grpc_target, "cam-1")
    big._out.put(pb.EdgeMessage(observations=pb.ObservationBatch(
        observations=[observation(f"big-{i}", samples[0].base, track_id="x" * 100) for i in range(1000)])))
    assert big.closed.wait(10) and big.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    big.close()
    fresh = Edge(server.grpc_target, "cam-1")
    assert list(fresh.send(observation("after-big", samples[0].base)).face_ids) == ["after-big"]
    fresh.close()
