"""Encryption at rest (``FACESERVER_STORAGE_KEY``): what Redis holds is ciphertext, the server still
matches and serves faces, records written without a key stay readable, a missing or wrong key is
a typed error that changes nothing, and erasure leaves nothing of the face in Redis."""

from __future__ import annotations

import base64
import os

import httpx
import numpy as np
import pydantic
import pytest
from server_testkit import API_KEY, Edge, observation

from analysis_server import records as rec
from analysis_server.at_rest import MARKER, Sealer, StorageKeyError
from analysis_server.keys import Keys
from analysis_server.settings import ServerSettings
from facecodec import base_layer

pytestmark = pytest.mark.slow

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()


def every_value(redis_client, prefix: str) -> bytes:
    """Every byte Redis holds under ``prefix``: key names, strings, hash fields, set and stream members."""
    out = []
    for k in redis_client.scan_iter(match=f"{prefix}:*"):
        out.append(k)
        t = redis_client.type(k)
        if t == b"string":
            out.append(redis_client.get(k))
        elif t == b"hash":
            out += [b for kv in redis_client.hgetall(k).items() for b in kv]
        elif t == b"zset":
            out += redis_client.zrange(k, 0, -1)
        elif t == b"set":
            out += list(redis_client.smembers(k))
        elif t == b"stream":
            out += [b for _, e in redis_client.xrange(k) for kv in e.items() for b in kv]
    return b"\x00".join(out)


def record_key(keys: Keys, face_id: str) -> tuple[str, bytes]:
    """The record hash and field of a face (storage layout 2)."""
    h = rec.face_hash(face_id)
    return keys.records(rec.bucket_of(h)), h


def stored_record(redis_client, keys: Keys, face_id: str) -> rec.Record:
    return rec.unpack_record(redis_client.hget(*record_key(keys, face_id)))


@pytest.fixture
def edges():
    """Real edge-side streams to the given server (closed after the test)."""
    opened: list[Edge] = []

    def connect(server, camera_id: str = "cam-1", **kw) -> Edge:
        opened.append(Edge(server.grpc_target, camera_id, **kw))
        opened[-1].hello()
        return opened[-1]

    yield connect
    for e in opened:
        e.close()


@pytest.fixture
def sealed(make_server):
    server = make_server(storage_key=KEY)
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        yield server, api


def test_redis_holds_no_feature_base_layer_or_enhancement_layer_in_plaintext(sealed, edges, samples, redis_client):
    server, api = sealed
    s = samples[0]
    edge = edges(server, textures={"enc-1": (s.chip, s.base)})
    assert list(edge.send(observation("enc-1", s.base), observation("enc-2", samples[1].base)).face_ids) == \
           ["enc-1", "enc-2"]
    r = api.get("/faces/enc-1/image", params={"layer": "full"})  # the edge uploads; the server caches it
    assert r.status_code == 200, r.text
    keys = Keys(server.settings.key_prefix)
    stored = stored_record(redis_client, keys, "enc-1")
    cached = redis_client.get(keys.enhancement(rec.bucket_of(rec.face_hash("enc-1")), "enc-1"))
    assert stored.base.startswith(MARKER) and cached.startswith(MARKER)  # and no float copy of the feature

    feature = base_layer.decode(s.base).feature.astype(np.float32).tobytes()
    enh = server.call(server.services.store.get_enhancement("enc-1"))
    everything = every_value(redis_client, keys.prefix)
    for plain in (feature, s.base, enh, feature[:64], s.base[5:]):
        assert plain not in everything
    # ...yet the server reads them back: the record, the cached layer, and a search over stored features.
    assert api.get("/faces/enc-1").json()["base_layer_bytes"] == len(s.base)
    again = api.get("/faces/enc-1/image", params={"layer": "full"})
    assert again.status_code == 200 and again.headers["x-enhancement-source"] == "cache"
    assert again.content == r.content
    hits = api.post("/search", json={"probe": {"face_id": "enc-1"}}).json()["hits"]
    assert hits[0]["face_id"] == "enc-1" and hits[0]["distance"] == pytest.approx(0, abs=1e-6)


def test_matching_at_ingest_works_on_sealed_records(sealed, edges, samples, redis_client):
    server, api = sealed
    person = samples[0].person
    same = [s for s in samples if s.person == person]
    ident = api.post("/identities", json={"name": person, "watchlist": True,
                                          "features": [{"feature": same[0].feature.tolist()}]}).json()
    edges(server).send(observation("m-1", same[1].base))
    face = api.get("/faces/m-1").json()
    assert face["match"]["identity_id"] == ident["identity_id"]


def test_delete_face_leaves_nothing_of_the_face_in_redis_but_its_tombstone(sealed, edges, samples, redis_client):
    server, api = sealed
    s = samples[0]
    edge = edges(server, textures={"del-1": (s.chip, s.base)})
    edge.send(observation("del-1", s.base), observation("keep-1", samples[1].base))
    assert api.get("/faces/del-1/image", params={"layer": "full"}).status_code == 200
    keys = Keys(server.settings.key_prefix)
    sealed_base = stored_record(redis_client, keys, "del-1").base
    enh_key = keys.enhancement(rec.bucket_of(rec.face_hash("del-1")), "del-1")
    assert redis_client.exists(enh_key) == 1

    assert api.delete("/faces/del-1").status_code == 200
    assert [k for k in redis_client.scan_iter(match=f"{keys.prefix}:*") if b"del-1" in k] == []
    # the tombstone (face id and capture time: a replay is not stored again) holds no data of the face
    tomb = redis_client.hget(*record_key(keys, "del-1"))
    assert rec.is_tombstone(tomb) and len(tomb) == 9 + 1 + len("del-1")
    everything = every_value(redis_client, keys.prefix)
    assert sealed_base not in everything and s.base not in everything
    for k in redis_client.scan_iter(match=f"{keys.prefix}:*"):
        t = redis_client.type(k)
        if t == b"zset" and not k.decode().startswith(f"{keys.prefix}:ix:{{g:"):  # the sweep's way to the tombstone
            assert redis_client.zscore(k, "del-1") is None, k
        elif t == b"set":
            assert not redis_client.sismember(k, "del-1"), k
    assert stored_record(redis_client, keys, "keep-1").base.startswith(MARKER)
    assert api.get("/faces/del-1").status_code == 404 and api.get("/faces/keep-1").status_code == 200


def test_records_written_without_a_key_stay_readable_once_a_key_is_set(make_server, edges, samples):
    plain = make_server()
    edges(plain).send(observation("old-1", samples[0].base))
    before = plain.call(plain.services.store.get("old-1"))
    later = make_server(prefix=plain.settings.key_prefix, storage_key=KEY)
    after = later.call(later.services.store.get("old-1"))
    assert after.base_layer == before.base_layer == samples[0].base
    assert np.array_equal(after.feature, before.feature)
    with httpx.Client(base_url=later.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.get("/faces/old-1").status_code == 200


def test_a_missing_or_wrong_key_is_a_typed_error_and_changes_nothing(sealed, make_server, edges, samples,
                                                                     redis_client):
    server, _ = sealed
    edges(server).send(observation("k-1", samples[0].base))
    keys = Keys(server.settings.key_prefix)
    stored = redis_client.hgetall(record_key(keys, "k-1")[0])

    for other in (make_server(prefix=keys.prefix), make_server(prefix=keys.prefix, storage_key=OTHER_KEY)):
        with pytest.raises(StorageKeyError, match="FACESERVER_STORAGE_KEY"):
            other.call(other.services.store.get("k-1"))
        with pytest.raises(StorageKeyError):
            other.call(other.services.store.get_many(["k-1"]))
        with httpx.Client(base_url=other.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
            r = api.get("/faces/k-1")
            assert r.status_code == 500 and "FACESERVER_STORAGE_KEY" in r.json()["detail"]
    assert redis_client.hgetall(record_key(keys, "k-1")[0]) == stored  # nothing was rewritten or dropped
    assert server.call(server.services.store.get("k-1")).base_layer == samples[0].base


def test_a_sealed_value_copied_to_another_face_or_field_does_not_open(sealed, edges, samples, redis_client):
    server, _ = sealed
    edges(server).send(observation("s-1", samples[0].base),
                                                   observation("s-2", samples[1].base))
    keys = Keys(server.settings.key_prefix)
    one, two = stored_record(redis_client, keys, "s-1"), stored_record(redis_client, keys, "s-2")

    def put(face_id: str, r: rec.Record, base: bytes) -> None:
        redis_client.hset(*record_key(keys, face_id), rec.pack_record(
            r.face_id, r.camera_id, r.capture_ms, r.received_ms, r.box, r.probability, r.face_size, r.fallback,
            r.track_id, r.identity_id, r.distance, base))

    put("s-2", two, one.base)  # s-1's sealed base layer in s-2's record
    with pytest.raises(StorageKeyError, match="altered or copied"):
        server.call(server.services.store.get("s-2"))
    put("s-1", one, one.base[:-1] + bytes([one.base[-1] ^ 1]))  # one bit changed
    with pytest.raises(StorageKeyError):
        server.call(server.services.store.get("s-1"))


def test_the_storage_key_setting_must_be_base64_of_32_bytes():
    base = dict(api_keys=API_KEY, camera_tokens={"cam-1": "token-cam-1"})
    assert ServerSettings(**base, storage_key=KEY).storage_key_bytes == bytes(range(32))
    assert ServerSettings(**base).storage_key_bytes is None
    for bad in ("not base64!", base64.b64encode(os.urandom(16)).decode()):
        with pytest.raises(pydantic.ValidationError, match="FACESERVER_STORAGE_KEY"):
            ServerSettings(**base, storage_key=bad)
    assert KEY not in repr(ServerSettings(**base, storage_key=KEY))


def test_sealer_round_trip_and_plaintext_pass_through():
    s = Sealer(bytes(range(32)))
    sealed = s.seal(b"\x01\x02feature", b"face:x:feat")
    assert sealed.startswith(MARKER) and b"feature" not in sealed
    assert s.open(sealed, b"face:x:feat") == b"\x01\x02feature"
    assert s.open(b"\xb1plain", b"face:x:base") == b"\xb1plain"
    assert Sealer(None).seal(b"abc", b"c") == b"abc"


def test_enrolled_features_are_sealed_and_a_fresh_server_still_matches_them(make_server, edges, samples, redis_client):
    server = make_server(storage_key=KEY)
    person = samples[0].person
    same = [s for s in samples if s.person == person]
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        ident = api.post("/identities", json={"name": person, "watchlist": True,
                                              "features": [{"feature": same[0].feature.tolist()}]}).json()
    keys = Keys(server.settings.key_prefix)
    stored = redis_client.hgetall(keys.identity_features(ident["identity_id"]))
    assert stored and all(v.startswith(MARKER) for v in stored.values())
    assert same[0].feature.astype(np.float32).tobytes()[:64] not in every_value(redis_client, keys.prefix)
    # a second server on the same Redis builds its gallery index from the sealed values alone
    again = make_server(prefix=server.settings.key_prefix, storage_key=KEY)
    edges(again).send(observation("after-restart", same[1].base))
    with httpx.Client(base_url=again.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.get("/faces/after-restart").json()["match"]["identity_id"] == ident["identity_id"]
