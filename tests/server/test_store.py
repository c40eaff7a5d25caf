"""The face store (storage layout 2) against a real Redis and a real 3-master Redis Cluster.

Every test runs twice, through the ``store`` fixture: on one redis-server (the session's embedded
one: the batch is one Lua script) and on a cluster started by the tests (no script may span
slots: records and index entries are single-key commands, one connection per node). What is
checked is what Redis holds afterwards and what the store answers: records, dedupe and
tombstones, listing by every filter through cursor pages against a brute-force expectation,
counts, after-the-fact matches, erasure, retention, the change log the search index follows,
enhancement layers, and the migration of layout-1 records.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import numpy as np
import pytest

from analysis_server import records as rec
from analysis_server.at_rest import Sealer
from analysis_server.keys import Keys
from analysis_server.redis_server import async_client, sync_client
from analysis_server.store import COLLISION, DUPLICATE, ERASED, STORED, FaceStore, Match, now_ms
from analysis_server.validation import Observation
from facecodec import base_layer

HOUR = 3600 * 1000


class Harness:
    """A FaceStore on its own key prefix and event loop; ``sync`` is a plain client of the same Redis."""

    def __init__(self, url: str, cluster: bool, retention_s: int = 7 * 86400, sealer: Sealer | None = None):
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.keys = Keys(f"t{secrets.token_hex(4)}")
        self.client = async_client(url)
        self.store = FaceStore(self.client, self.keys, retention_s, sealer=sealer)
        self.cluster = self.store.cluster  # TEST_REDIS_CLUSTER=1 makes the "single" Redis a cluster too
        self.sync = sync_client(url)
        self.run(self.store.check_layout())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def other(self, **kw) -> FaceStore:
        """Another store (another server replica) on the same Redis and prefix."""
        return FaceStore(self.client, self.keys, self.store.retention_ms // 1000, **kw)

    def close(self) -> None:
        keys = list(self.sync.scan_iter(match=f"{self.keys.prefix}:*", count=1000))
        for k in keys:
            self.sync.delete(k)
        self.sync.close()
        self.run(self.client.aclose())
        self.loop.close()


@pytest.fixture(params=["single", "cluster"])
def store(request, redis_url):
    url = redis_url if request.param == "single" else request.getfixturevalue("redis_cluster_url")
    h = Harness(url, request.param == "cluster")
    yield h
    h.close()


@pytest.fixture(scope="module")
def payloads():
    """Base layers of 64 different synthetic faces (the base-layer model's distribution)."""
    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    rng = np.random.default_rng(7)
    feats = model.sample(64, rng)
    return [base_layer.encode(f) for f in feats]


def obs(face_id: str, base: bytes, camera: str = "cam-1", t: int | None = None, track: str = "tr-1") -> Observation:
    d = base_layer.decode(base)
    return Observation(face_id, camera, t or now_ms(), (10.5, 20.25, 110.0, 140.0), 0.98, 120.0, False, track, base,
                       d.backend, d.model, d.step_index, d.feature)


def listing(store: Harness, limit: int = 7, **filters) -> list[str]:
    """Every face id of a listing, page after page through its cursors."""
    out, cursor = [], None
    for _ in range(1000):
        page = store.run(store.store.page(limit=limit, cursor=cursor, **filters))
        assert len(page.records) <= limit and not page.truncated
        out += [r.face_id for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("the cursor never ended")


def test_a_stored_face_reads_back_as_it_was_sent_and_a_replay_is_not_stored_twice(store, payloads):
    o = obs("f-1", payloads[0], t=now_ms() - 5000, track="track-9")
    assert store.run(store.store.store_batch([o], [Match("id-1", 0.4123456789, False)])) == [STORED]
    r = store.run(store.store.get("f-1"))
    assert (r.face_id, r.camera_id, r.capture_time_ms, r.track_id) == ("f-1", "cam-1", o.capture_ms, "track-9")
    assert r.box == (10.5, 20.25, 110.0, 140.0) and r.probability == pytest.approx(0.98) and r.face_size == 120.0
    assert (r.identity_id, r.distance, r.base_layer) == ("id-1", 0.4123456789, payloads[0])
    assert (r.backend, r.model, r.step_index) == (o.backend, o.model, o.step_index)
    assert np.array_equal(r.feature, o.feature)  # decoded from the base layer: no float copy is stored
    assert store.run(store.store.store_batch([o], [None])) == [DUPLICATE]
    assert store.run(store.store.get("f-1")).identity_id == "id-1"  # the first write stays
    moved = o._replace(capture_ms=o.capture_ms - 3 * rec.PERIOD_MS)  # the same id, another time: not stored
    assert store.run(store.store.store_batch([moved], [None])) == [DUPLICATE]
    assert listing(store) == ["f-1"] and listing(store, camera="cam-1") == ["f-1"]
    assert store.sync.xlen(store.keys.events) == 1
    assert store.run(store.store.get("f-unknown")) is None
    assert store.run(store.store.count_faces()) == (1, 1)
    # one record hash holds the face; its value is the packed record, no feature bytes in it
    value = store.run(store.store.raw_value("f-1"))
    assert value[0] == rec.RECORD and o.feature.astype(np.float32).tobytes()[:16] not in value
    assert len(value) < 120


def test_one_faces_keys_share_a_slot_and_time_indexes_spread_over_slots(store, payloads):
    from redis.crc import key_slot

    k = store.keys
    h = rec.face_hash("f-slot")
    b = rec.bucket_of(h)
    assert key_slot(k.records(b).encode()) == key_slot(k.enhancement(b, "f-slot").encode())
    t = now_ms()
    slots = {key_slot(k.all_index(s, m, rec.period_of(t)).encode()) for s in range(rec.SHARDS) for m in (True, False)}
    assert len(slots) > 20  # 32 keys of one period, not one hot slot
    slots = {key_slot(k.camera_index("cam-1", False, rec.period_of(t) + i).encode()) for i in range(12)}
    assert len(slots) > 8  # one camera's index moves to another slot every period


def test_erased_faces_become_tombstones_that_a_replay_does_not_undo(store, payloads):
    faces = [obs(f"e-{i}", payloads[i], t=now_ms() - i * 1000) for i in range(4)]
    assert store.run(store.store.store_batch(faces, [Match("id-9", 0.3, True), None, None, None])) == [STORED] * 4
    assert store.run(store.store.delete_faces(["e-0", "e-2", "nope"])) == {"cam-1": ["e-0", "e-2"]}
    assert store.run(store.store.get_many(["e-0", "e-1", "e-2", "e-3"]))[0::2] == [None, None]
    assert rec.is_tombstone(store.run(store.store.raw_value("e-0")))
    assert store.run(store.store.store_batch(faces, [None] * 4)) == [ERASED, DUPLICATE, ERASED, DUPLICATE]
    assert store.run(store.store.get("e-0")) is None
    assert listing(store) == ["e-1", "e-3"]
    assert listing(store, identity="id-9") == [] and listing(store, camera="cam-1") == ["e-1", "e-3"]
    assert store.run(store.store.count_faces()) == (2, 0)
    assert store.run(store.store.identity_counts(["id-9"])) == {"id-9": 0}
    kinds = [e[b"type"] for _, e in store.sync.xrange(store.keys.events)]  # none for the replays
    assert sorted(kinds) == sorted([b"observation"] * 4 + [b"watchlist_hit", b"face_deleted", b"face_deleted"])
    assert store.run(store.store.delete_faces(["e-0"])) == {}  # erasing twice erases nothing more


def test_two_face_ids_with_the_same_hash_are_told_apart(store, payloads, monkeypatch):
    import analysis_server.store as store_module

    monkeypatch.setattr(store_module, "face_hash", lambda face_id: b"\x12\x34samehash"[:8])
    a, b = obs("same-a", payloads[0]), obs("same-b", payloads[1])
    assert store.run(store.store.store_batch([a], [None])) == [STORED]
    assert store.run(store.store.store_batch([b], [None])) == [COLLISION]
    assert store.run(store.store.get("same-b")) is None and store.run(store.store.get("same-a")).face_id == "same-a"


def test_every_listing_filter_pages_through_the_index_newest_first(store, payloads):
    """Faces over several 5-minute periods and 3 cameras, some sharing a millisecond, some matched:
    every filter's pages, joined, are exactly the brute-force answer."""
    rng = np.random.default_rng(3)
    base_t = now_ms() - 2 * HOUR
    faces, matches = [], []
    for i in range(150):
        t = base_t + int(rng.integers(0, 6)) * rec.PERIOD_MS + (int(rng.integers(0, 40)) if i % 5 else 7)
        faces.append(obs(f"face-{i:03d}", payloads[i % 64], camera=f"cam-{i % 3}", t=t))
        m = ["alice", "bob", None, None][i % 4]
        matches.append(Match(m, 0.2, False) if m else None)
    for i in range(0, 150, 40):  # several batches, some from another replica
        s = store.store if i % 80 == 0 else store.other()
        assert set(store.run(s.store_batch(faces[i:i + 40], matches[i:i + 40]))) == {STORED}
    rows = [(o.capture_ms, o.face_id, o.camera_id, m.identity_id if m else None) for o, m in zip(faces, matches)]

    def expect(camera=None, identity=None, matched=None, since_ms=None, until_ms=None):
        sel = [r for r in rows if (camera is None or r[2] == camera) and (identity is None or r[3] == identity)
               and (matched is None or bool(r[3]) == matched) and (since_ms is None or r[0] >= since_ms)
               and (until_ms is None or r[0] <= until_ms)]
        return [r[1] for r in sorted(sel, key=lambda r: (r[0], r[1]), reverse=True)]

    mid = base_t + 2 * rec.PERIOD_MS + 7
    cases = [{}, {"camera": "cam-1"}, {"matched": True}, {"matched": False}, {"identity": "alice"},
             {"camera": "cam-2", "matched": False}, {"camera": "cam-0", "identity": "bob"},
             {"since_ms": mid}, {"until_ms": mid}, {"since_ms": mid, "until_ms": mid + 2 * rec.PERIOD_MS},
             {"camera": "cam-1", "since_ms": mid, "matched": True}, {"identity": "alice", "until_ms": mid}]
    for f in cases:
        want = expect(**f)
        assert want, f
        assert listing(store, limit=7, **f) == want, f
        assert listing(store, limit=50, **f) == want, f
    assert listing(store, identity="alice", matched=False) == []
    page = store.run(store.store.page(limit=10, skip=5))
    assert [r.face_id for r in page.records] == expect()[5:15]
    assert store.run(store.store.count_faces()) == (150, sum(1 for r in rows if r[3]))
    assert store.run(store.store.camera_counts(["cam-0", "cam-1", "cam-9"])) == {
        "cam-0": 50, "cam-1": 50, "cam-9": 0}
    assert store.run(store.store.identity_counts(["alice", "bob"])) == {"alice": 38, "bob": 38}


def test_a_scan_bound_stops_a_listing_with_a_cursor_to_go_on(store, payloads):
    t = now_ms() - 1000
    faces = [obs(f"b-{i:02d}", payloads[i], camera="cam-1" if i < 30 else "cam-2", t=t - i) for i in range(40)]
    store.run(store.store.store_batch(faces, [Match("carol", 0.1, False) if i >= 30 else None for i in range(40)]))
    # carol's faces are all on cam-2: the identity index is read and each record's camera checked
    page = store.run(store.store.page(identity="carol", camera="cam-1", limit=5, max_scan=4))
    assert page.records == [] and page.truncated and page.next_cursor and page.scanned == 4
    page = store.run(store.store.page(identity="carol", camera="cam-1", limit=5, cursor=page.next_cursor))
    assert page.records == [] and page.next_cursor is None and not page.truncated


def test_a_match_after_the_fact_moves_the_face_between_indexes(store, payloads):
    store.run(store.store.store_batch([obs("late-1", payloads[0])], [None]))
    assert listing(store, matched=False) == ["late-1"] and listing(store, matched=True) == []
    r = store.run(store.store.assign_match("late-1", "dave", 0.0))
    assert (r.identity_id, r.distance) == ("dave", 0.0)
    assert listing(store, matched=True) == ["late-1"] and listing(store, matched=False) == []
    assert listing(store, identity="dave") == ["late-1"] and listing(store, camera="cam-1", matched=True) == ["late-1"]
    store.run(store.store.assign_match("late-1", "erin", 0.1))
    assert listing(store, identity="dave") == [] and listing(store, identity="erin") == ["late-1"]
    assert store.run(store.store.count_faces()) == (1, 1)
    assert store.run(store.store.identity_counts(["dave", "erin"])) == {"dave": 0, "erin": 1}
    assert store.run(store.store.identity_face_ids("erin")) == ["late-1"]
    store.run(store.store.delete_faces(["late-1"]))
    assert store.run(store.store.assign_match("late-1", "dave", 0.0)) is None


def test_the_sweep_deletes_what_is_past_retention_and_keeps_the_rest(redis_url, request, payloads):
    for kind in ("single", "cluster"):
        url = redis_url if kind == "single" else request.getfixturevalue("redis_cluster_url")
        h = Harness(url, kind == "cluster", retention_s=3600)
        try:
            now = now_ms()
            old = [obs(f"old-{i}", payloads[i], t=now - 3600_000 - 40 * rec.PERIOD_MS + i * 1000) for i in range(5)]
            edge = [obs("edge-1", payloads[5], t=now - 3600_000 - 2000), obs("edge-2", payloads[6], t=now - 3600_000 + 60_000)]
            new = [obs("new-1", payloads[7], camera="cam-2", t=now - 1000)]
            h.run(h.store.touch_camera("cam-1"))
            h.run(h.store.touch_camera("cam-2"))
            h.run(h.store.store_batch(old + edge + new, [Match("gina", 0.2, False)] + [None] * 7))
            h.run(h.store.put_enhancement(h.run(h.store.get("edge-2")), b"enh-bytes"))
            h.sync.hset(h.keys.records(rec.bucket_of(rec.face_hash("old-4"))), rec.face_hash("old-4"),
                        h.sync.hget(h.keys.records(rec.bucket_of(rec.face_hash("old-4"))), rec.face_hash("old-4")))
            h.run(h.store.delete_faces(["old-3"]))  # a tombstone goes with its face's retention
            assert h.run(h.store.sweep(["gina"])) == 6
            assert listing(h) == ["new-1", "edge-2"]
            assert h.run(h.store.get_many(["old-0", "old-3", "edge-1"])) == [None, None, None]
            assert h.run(h.store.raw_value("old-3")) is None and h.run(h.store.raw_value("edge-1")) is None
            assert h.run(h.store.count_faces()) == (2, 0)
            assert h.run(h.store.camera_counts(["cam-1", "cam-2"])) == {"cam-1": 1, "cam-2": 1}
            assert h.run(h.store.get_enhancement("edge-2")) == b"enh-bytes"
            names = {k.decode() for k in h.sync.scan_iter(match=f"{h.keys.prefix}:*", count=1000)}
            old_period = rec.period_of(old[0].capture_ms)
            assert not [n for n in names if f":{old_period}}}" in n]  # no index, counts or directory left
            assert h.run(h.store.sweep(["gina"])) == 0
        finally:
            h.close()


def test_the_change_log_tells_the_search_index_what_was_stored_and_erased(store, payloads):
    heads = store.run(store.store.log_heads())
    faces = [obs(f"l-{i}", payloads[i]) for i in range(20)]
    store.run(store.store.store_batch(faces, [None] * 20))
    store.run(store.store.store_batch(faces[:3], [None] * 3))  # duplicates
    store.run(store.store.delete_faces(["l-4"]))
    got = store.run(store.store.read_log(heads))
    assert [s for s, _, _ in got] == [rec.log_shard("cam-1")]  # one camera: one shard, one entry a batch
    entries = got[0][2]
    assert [kind for kind, _ in entries] == ["a", "a", "e"] if store.cluster else ["a", "e"]
    adds = [v[i:i + 8] for kind, v in entries if kind == "a" for i in range(0, len(v), 8)]
    erases = [v for kind, v in entries if kind == "e"]
    hashes = {rec.face_hash(o.face_id): o for o in faces}
    assert set(adds) == set(hashes) and [e[:8] for e in erases] == [rec.face_hash("l-4")]
    # a cluster writes a replay's entries again (it may complete a batch a crash cut in two): the index skips it
    assert len(adds) == 20 + (3 if store.cluster else 0)
    assert int.from_bytes(erases[0][8:], "little") == faces[4].capture_ms
    later = {shard: last for shard, last, _ in got}
    assert store.run(store.store.read_log({**heads, **later})) == []
    assert store.run(store.store.log_heads()) == {**heads, **later}


def test_enhancement_layers_are_cached_and_erased_with_their_face(store, payloads):
    store.run(store.store.store_batch([obs("x-1", payloads[0])], [None]))
    face = store.run(store.store.get("x-1"))
    assert store.run(store.store.put_enhancement(face, b"\x01layer"))
    assert store.run(store.store.get_enhancement("x-1")) == b"\x01layer"
    store.run(store.store.delete_faces(["x-1"]))
    assert store.run(store.store.get_enhancement("x-1")) is None


def test_sealed_base_layers_open_only_under_their_key(store, payloads):
    import base64
    import os

    from analysis_server.at_rest import StorageKeyError

    key = os.urandom(32)
    sealed = FaceStore(store.client, store.keys, 3600, sealer=Sealer(key))
    sealed_on = store.run
    sealed_on(sealed.store_batch([obs("s-1", payloads[0])], [None]))
    value = sealed_on(sealed.raw_value("s-1"))
    assert payloads[0] not in value and sealed_on(sealed.get("s-1")).base_layer == payloads[0]
    with pytest.raises(StorageKeyError):
        store.run(store.store.get("s-1"))
    assert base64.b64encode(key)


def test_single_node_script_and_cluster_commands_write_the_same_keys(redis_url, payloads):
    """The two write paths (one script per batch; single-key commands) leave the same Redis content."""
    a, b = Harness(redis_url, False), Harness(redis_url, False)
    try:
        b.store.cluster = True  # the command path, on one Redis
        t = now_ms() - 10_000
        faces = [obs(f"p-{i}", payloads[i], camera=f"cam-{i % 2}", t=t + i * 997) for i in range(30)]
        matches = [Match("ivan", 0.25, i % 3 == 0) if i % 2 else None for i in range(30)]
        for h in (a, b):
            assert h.run(h.store.store_batch(faces, matches, received_ms=t + 99_999)) == [STORED] * 30
            assert h.run(h.store.store_batch(faces[:5], matches[:5])) == [DUPLICATE] * 5

        def dump(h: Harness) -> dict:
            out = {}
            for k in h.sync.scan_iter(match=f"{h.keys.prefix}:*"):
                name = k.decode()[len(h.keys.prefix):]
                kind = h.sync.type(k).decode()
                if kind == "hash":
                    out[name] = h.sync.hgetall(k)
                elif kind == "zset":
                    out[name] = h.sync.zrange(k, 0, -1, withscores=True)
                elif kind == "stream" and ":log:" in name:  # the faces it names (the command path logs a replay
                    out[name] = {v[i:i + 8] for _, f in h.sync.xrange(k) for v in f.values()  # again)
                                 for i in range(0, len(v), 8)}
                elif kind == "stream":  # entry ids are times: compare what they hold
                    out[name] = sorted(tuple(sorted(f.items())) for _, f in h.sync.xrange(k))
            return out

        da, db = dump(a), dump(b)
        assert da.keys() == db.keys() and da == db
    finally:
        a.close()
        b.close()


def test_layout_1_records_are_migrated_with_their_matches_layers_and_tombstones(redis_url, payloads):
    # (layout 1 never ran on a cluster: its batch script spans slots; the migration works on one too)
    """Records written by the previous layout (a hash per face with a float feature, one sorted set
    per index, tombstone keys) are moved into this one at start, then the old keys are gone."""
    import json

    h = Harness(redis_url, False)
    k = h.keys
    try:
        r = h.sync
        t = now_ms() - 60_000
        for i, (fid, cam, ident) in enumerate([("old-a", "cam-1", ""), ("old-b", "cam-2", "jane"),
                                               ("old-c", "cam-1", "")]):
            d = base_layer.decode(payloads[i])
            meta = {"box": [1.0, 2.0, 30.0, 40.0], "prob": 0.9, "size": 29.0, "fallback": False, "track": "t-1",
                    "backend": d.backend, "model": d.model, "step": d.step_index, "recv": t + i + 5}
            r.hset(k.legacy_face(fid), mapping={"camera": cam, "t": t + i, "identity": ident,
                                                 "distance": "0.25" if ident else "", "base": payloads[i],
                                                 "feat": d.feature.astype(np.float32).tobytes(),
                                                 "meta": json.dumps(meta)})
            r.pexpireat(k.legacy_face(fid), t + i + 3600_000)
            r.zadd(k.legacy_faces, {fid: t + i})
            r.zadd(k.legacy_camera_faces(cam), {fid: t + i})
            if ident:
                r.zadd(k.legacy_matched, {fid: t + i})
                r.zadd(k.legacy_identity_faces(ident), {fid: t + i})
        r.set(k.legacy_enhancement("old-b"), b"\xe2layer", px=50_000)
        r.set(k.legacy_tombstone("gone-1"), b"1", px=3_000_000)
        assert h.run(h.store.migrate_legacy()) == 3
        assert listing(h) == ["old-c", "old-b", "old-a"] and listing(h, identity="jane") == ["old-b"]
        b = h.run(h.store.get("old-b"))
        assert (b.camera_id, b.identity_id, b.distance, b.received_ms, b.box) == ("cam-2", "jane", 0.25, t + 6,
                                                                               (1.0, 2.0, 30.0, 40.0))
        assert h.run(h.store.get_enhancement("old-b")) == b"\xe2layer"
        assert 0 < r.pttl(h.store._enh_key("old-b")) <= 50_000
        assert h.run(h.store.store_batch([obs("gone-1", payloads[5])], [None])) == [ERASED]
        left = {x.decode() for x in r.scan_iter(match=f"{k.prefix}:*")}
        assert not [x for x in left if x.startswith((k.legacy_face(""), k.legacy_tombstone(""))) or
                    x in (k.legacy_faces, k.legacy_matched) or x.endswith(":faces")]
        assert h.run(h.store.migrate_legacy()) == 0  # nothing left to move
        assert h.run(h.store.count_faces()) == (3, 1)
    finally:
        h.close()


def test_records_and_indexes_stay_compact_encodings(redis_url, payloads):
    """The embedded Redis keeps record hashes and index buckets as ziplists (a few bytes an entry)."""
    h = Harness(redis_url, False)
    try:
        t = now_ms()
        faces = [obs(f"z-{i}", payloads[i % 64], t=t - i) for i in range(300)]
        h.run(h.store.store_batch(faces, [None] * 300))
        enc = {h.sync.object("encoding", k) for k in h.sync.scan_iter(match=f"{h.keys.prefix}:*")
               if h.sync.type(k) in (b"hash", b"zset")}
        assert enc == {b"ziplist"} or enc == {b"listpack"}, enc
    finally:
        h.close()


def test_the_layout_marker_refuses_another_layout(store):
    from analysis_server.errors import ConfigurationError

    store.sync.hset(store.keys.layout, "period_ms", "60000")
    with pytest.raises(ConfigurationError, match="storage layout"):
        store.run(store.store.check_layout())


def test_an_index_entry_is_believed_only_when_its_record_agrees(store, payloads):
    """Entries a crash, a re-match or an erasure left behind are skipped."""
    store.run(store.store.store_batch([obs("s-1", payloads[0], t=now_ms() - 10)], [None]))
    t = now_ms() - 10
    k = store.keys
    p = rec.period_of(t)
    store.sync.zadd(k.camera_index("cam-1", False, p), {"ghost": t})  # no record
    store.sync.zadd(k.all_index(0, True, p), {"s-1": t})  # wrong state
    store.sync.zadd(k.all_periods(), {str(p): p})
    store.sync.zadd(k.all_periods(True), {str(p): p})
    assert listing(store) == ["s-1"] and listing(store, camera="cam-1") == ["s-1"]
    time.sleep(0.001)
