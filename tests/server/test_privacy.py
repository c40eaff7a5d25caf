"""Erasure: DELETE /faces and /identities remove everything in Redis and tell the edge to drop textures."""

from __future__ import annotations

import logging
import time

import pytest
from server_testkit import observation, stored_face

from analysis_server import records as rec
from analysis_server.keys import Keys
from testkit.processes import wait_until

pytestmark = pytest.mark.slow


def _all_keys_mentioning(redis_client, prefix: str, face_id: str) -> list[bytes]:
    """Keys that name the face or hold it, but its tombstone (in its record hash) and the all-faces
    index entry that leads the retention sweep to that tombstone."""
    found = []
    for k in redis_client.scan_iter(match=f"{prefix}:*"):
        t = redis_client.type(k)
        if face_id.encode() in k:
            found.append(k)
        elif t == b"hash" and k.startswith(f"{prefix}:r:".encode()):
            v = redis_client.hget(k, rec.face_hash(face_id))
            if v is not None and not rec.is_tombstone(v):
                found.append(k)
        elif t == b"zset" and not k.startswith(f"{prefix}:ix:{{g:".encode()) and \
                redis_client.zscore(k, face_id) is not None:
            found.append(k)
        elif t == b"set" and redis_client.sismember(k, face_id):
            found.append(k)
    return found


def test_delete_face_erases_its_redis_data_and_sends_drop_texture_to_the_edge(server, api, edges, samples, redis_client):
    s = samples[0]
    edge = edges("cam-1", textures={"d-1": (s.chip, s.base)})
    edge.send(observation("d-1", s.base), observation("d-2", samples[1].base))
    assert api.get("/faces/d-1/image", params={"layer": "full"}).status_code == 200  # caches the enhancement layer
    keys = Keys(server.settings.key_prefix)
    assert redis_client.exists(keys.enhancement(rec.bucket_of(rec.face_hash("d-1")), "d-1"))
    r = api.delete("/faces/d-1")
    assert r.status_code == 200 and r.json() == {"erased": ["d-1"], "texture_drop_sent": True}
    assert edge.drops.get(timeout=5) == ["d-1"]
    # The pending drop leaves Redis once the edge confirms it (its answer to the request that follows
    # the drop), a round trip after the edge received the drop itself.
    wait_until(lambda: _all_keys_mentioning(redis_client, keys.prefix, "d-1") == [], timeout=10,
               what="no key but the tombstone mentions the erased face")
    assert api.get("/faces/d-1").status_code == 404 and api.get("/faces/d-2").status_code == 200
    assert api.delete("/faces/d-1").status_code == 404
    assert [e["action"] for e in api.get("/audit").json()][0] == "erase_face"


def test_drop_texture_for_an_offline_camera_is_sent_when_it_reconnects(server, api, edges, samples):
    edge = edges("cam-2")
    edge.send(observation("q-1", samples[0].base, camera_id="cam-2"))
    edge.close()
    r = api.delete("/faces/q-1")
    assert r.json() == {"erased": ["q-1"], "texture_drop_sent": False}
    again = edges("cam-2")
    assert again.drops.get(timeout=5) == ["q-1"]


def test_a_replay_of_an_erased_face_is_acked_but_not_stored_again(server, api, edges, samples, redis_client):
    edge = edges("cam-1")
    edge.send(observation("z-1", samples[0].base))
    api.delete("/faces/z-1")
    ack = edge.send(observation("z-1", samples[0].base))
    assert list(ack.face_ids) == ["z-1"]  # the edge may forget it
    assert api.get("/faces/z-1").status_code == 404
    assert stored_face(redis_client, server.settings.key_prefix, "z-1") is None


def test_delete_identity_erases_it_and_every_face_matched_to_it(server, api, edges, samples, redis_client):
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    other = next(s for s in samples if s.person != person)
    iid = api.post("/identities", json={"name": person, "features": [{"feature": mine[0].feature.tolist()}]}).json()["identity_id"]
    edge = edges("cam-1")
    edge.send(observation("m-1", mine[1].base), observation("m-2", mine[2].base), observation("o-1", other.base))
    r = api.delete(f"/identities/{iid}").json()
    assert sorted(r["faces_erased"]) == ["m-1", "m-2"]
    assert sorted(edge.drops.get(timeout=5)) == ["m-1", "m-2"]
    keys = Keys(server.settings.key_prefix)
    assert not redis_client.exists(keys.identity(iid), keys.identity_features(iid), keys.identity_periods(iid))
    assert server.call(server.services.store.identity_face_ids(iid)) == []
    assert [f["face_id"] for f in api.get("/faces").json()["items"]] == ["o-1"]
    assert api.post("/identify", json={"probe": {"feature": mine[1].feature.tolist()}}).json()["candidates"] == []


def test_nothing_biometric_is_written_to_the_logs(server, api, edges, samples, caplog):
    caplog.set_level(logging.DEBUG)
    s = samples[0]
    edge = edges("cam-1", textures={"l-1": (s.chip, s.base)})
    edge.send(observation("l-1", s.base), observation("l-bad", s.base[:-4] + b"\x00\x00\x00\x00"))
    iid = api.post("/identities", json={"name": "P", "features": [{"feature": s.feature.tolist()}]}).json()["identity_id"]
    api.get("/faces/l-1/image", params={"layer": "full"})
    api.delete(f"/identities/{iid}")
    time.sleep(0.2)
    text = "\n".join(r.getMessage() for r in caplog.records)
    values = [f"{v:.4f}" for v in s.feature[:8]] + [s.base.hex()[:16], repr(s.base[5:15])[2:-1]]
    assert not [v for v in values if v in text]
