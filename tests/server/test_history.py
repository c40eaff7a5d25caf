"""The retrospective search index (analysis_server/history.py) in a real server on a real Redis.

An erased face never comes back from search, from the index in memory or from its files after a
restart; time and camera filters are exact; results are paged and ranked by distance; faces another
replica stored are found; a restart reads only the change log written since the files were saved;
expired faces leave the index; and the default index (1,024 lists, probed 64 at a time beyond the
whole window does not fit the codes a query may scan) finds what the exact scan finds.
"""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest
from server_testkit import API_KEY, Edge, observation

from analysis_server import records as rec
from analysis_server.history import DAY_MS, HistoryIndex, train_template
from facecodec import base_layer

pytestmark = pytest.mark.slow


def ready(server):
    server.call(server.services.history.ready.wait(), timeout=180)
    return server


def search(server, **body) -> dict:
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=60) as api:
        r = api.post("/search", json=body)
        assert r.status_code == 200, r.text
        return r.json()


def send(server, camera: str, *obs) -> None:
    edge = Edge(server.grpc_target, camera)
    try:
        edge.hello()
        assert len(edge.send(*obs).face_ids) == len(obs)
    finally:
        edge.close()


def test_an_erased_face_never_comes_back_from_search(make_server, samples, tmp_path):
    server = ready(make_server(data_dir=tmp_path / "a"))
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    send(server, "cam-1", *[observation(f"p-{i}", s.base) for i, s in enumerate(mine[:3])],
         *[observation(f"x-{i}", s.base) for i, s in enumerate(samples[5:15])])
    probe = {"probe": {"feature": mine[0].feature.tolist()}, "threshold": 4.0, "limit": 50}
    first = search(server, **probe)
    assert first["index"] == "faiss-ivf-pq" and first["hits"][0]["face_id"] == "p-0"
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.delete("/faces/p-0").status_code == 200
    h = rec.face_hash("p-0")
    # gone from the next answer, from the index in memory, and from what a restart loads
    assert "p-0" not in {x["face_id"] for x in search(server, **probe)["hits"]}
    server.call(server.services.history.catch_up())
    assert server.services.history.index.codes_of(h) == []
    server.call(server.services.history.save())
    data = b"".join(f.read_bytes() for f in (tmp_path / "a" / "history").rglob("day-*.bin"))
    assert data and h not in data
    prefix = server.settings.key_prefix
    server.stop()
    again = ready(make_server(prefix=prefix, data_dir=tmp_path / "a"))
    assert again.services.history.rows_read == 0  # loaded from its files: no record read again
    answer = search(again, **probe)
    assert answer["index"] == "faiss-ivf-pq" and "p-0" not in {x["face_id"] for x in answer["hits"]}
    assert {x["face_id"] for x in answer["hits"]} >= {"p-1", "p-2"}
    # a replay of the erased face is acknowledged, not stored, and not indexed
    send(again, "cam-1", observation("p-0", mine[0].base))
    assert "p-0" not in {x["face_id"] for x in search(again, **probe)["hits"]}
    assert again.services.history.index.codes_of(h) == []


def test_time_and_camera_filters_are_exact_and_hits_come_ranked_and_paged(make_server, samples):
    server = ready(make_server())
    now = int(time.time() * 1000)
    base = samples[0].base
    # one base layer everywhere: every face at distance 0; only the filters tell them apart
    faces = [observation(f"t-{i:02d}", base, camera_id=("cam-1", "cam-2")[i % 2], t_ms=now - i * 3_600_000 - 7)
             for i in range(30)]
    send(server, "cam-1", *[o for o in faces if o.camera_id == "cam-1"])
    send(server, "cam-2", *[o for o in faces if o.camera_id == "cam-2"])
    since, until = now - 20 * 3_600_000, now - 5 * 3_600_000
    want = {o.face_id for o in faces if since <= o.capture_time_ms <= until and o.camera_id == "cam-2"}
    got, offset = [], 0
    while offset is not None:
        page = search(server, probe={"base_layer": base64.b64encode(base).decode()}, since_ms=since,
                      until_ms=until, camera_ids=["cam-2"], limit=3, offset=offset)
        assert page["index"] == "faiss-ivf-pq" and len(page["hits"]) <= 3
        got += page["hits"]
        offset = page["next_offset"]
    assert {h["face_id"] for h in got} == want and len(got) == len(want)
    assert all(h["camera_id"] == "cam-2" and since <= h["capture_time_ms"] <= until for h in got)
    # ties in distance: newest first
    assert [h["capture_time_ms"] for h in got] == sorted((h["capture_time_ms"] for h in got), reverse=True)
    # ranked by distance with another probe
    hits = search(server, probe={"feature": samples[3].feature.tolist()}, threshold=4.0, limit=5)["hits"]
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)


def test_faces_stored_by_another_replica_are_found_at_once(make_server, samples):
    a = ready(make_server())
    b = ready(make_server(prefix=a.settings.key_prefix))
    send(a, "cam-1", observation("from-a", samples[0].base))
    hits = search(b, probe={"feature": samples[0].feature.tolist()}, limit=5)["hits"]
    assert hits and hits[0]["face_id"] == "from-a" and b.services.history.rows_read >= 1
    with httpx.Client(base_url=b.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.delete("/faces/from-a").status_code == 200
    assert search(a, probe={"feature": samples[0].feature.tolist()}, limit=5)["hits"] == []


def test_a_face_the_log_reader_reached_first_is_not_kept_waiting(make_server, samples):
    """A batch is noted for the index after Redis answered, so the log reader may read its entries
    first (and the faces back from Redis). Such notes are dropped by the next pass that reads the log
    to its end; kept, they piled up, a feature each, at a few percent of every face ingested."""
    server = ready(make_server())
    history, store = server.services.history, server.services.store
    late: list = []
    store.on_stored = late.extend  # hold the notes back, as when the reader wins the race
    send(server, "cam-1", *[observation(f"late-{i}", s.base) for i, s in enumerate(samples[:6])])
    read_before = history.rows_read
    server.call(history.catch_up())
    assert history.rows_read - read_before == 6  # the reader got there first
    assert len(late) == 6
    history.note_stored(late)
    server.call(history.catch_up())
    assert history.waiting == 0
    hits = search(server, probe={"feature": samples[0].feature.tolist()}, limit=5)["hits"]
    assert [h["face_id"] for h in hits].count("late-0") == 1


def test_a_restart_reads_only_the_log_written_since_the_files(make_server, samples, tmp_path):
    server = ready(make_server(data_dir=tmp_path / "r"))
    send(server, "cam-1", *[observation(f"r-{i}", s.base) for i, s in enumerate(samples[:10])])
    server.call(server.services.history.catch_up())
    server.call(server.services.history.save())
    other = make_server(prefix=server.settings.key_prefix, history_index=False)
    send(other, "cam-2", *[observation(f"s-{i}", s.base, camera_id="cam-2") for i, s in enumerate(samples[10:14])])
    prefix = server.settings.key_prefix
    server.stop()
    again = ready(make_server(prefix=prefix, data_dir=tmp_path / "r"))
    assert again.services.history.rows_read == 4  # the four stored while it was down, nothing else
    assert len(again.services.history.index) == 14


def test_expired_faces_leave_the_index(make_server, samples):
    server = ready(make_server(retention_s=3))
    now = int(time.time() * 1000)
    send(server, "cam-1", observation("soon", samples[0].base, t_ms=now - 2500), observation("later", samples[1].base))
    server.call(server.services.history.catch_up())
    assert server.services.history.index.codes_of(rec.face_hash("soon"))
    time.sleep(0.6)
    server.call(server.services.history.expire())
    assert server.services.history.index.codes_of(rec.face_hash("soon")) == []
    assert server.services.history.index.codes_of(rec.face_hash("later"))


def test_the_default_index_probes_lists_and_agrees_with_the_exact_search():
    """1,024 lists, 16-byte codes, 64 lists probed (the day holds more codes than a query scans): the
    nearest faces of synthetic people seen several times each are found with exact re-ranking."""
    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    rng = np.random.default_rng(5)
    people = model.sample(2000, rng)
    who = rng.integers(0, 2000, 20_000)
    noise = rng.normal(size=(20_000, 128)).astype(np.float32)
    x = people[who] + 0.25 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    index = HistoryIndex(train_template(128, 1024, 16), nprobe=64, scan_codes=1000)
    t0 = 1_790_000_000_000
    hashes = [int(i).to_bytes(8, "little") for i in range(1, 20_001)]
    index.add(hashes, [t0 + int(i) * 7 for i in range(20_000)], ["cam-1"] * 20_000, x)
    jitter = rng.normal(size=(50, 128)).astype(np.float32)
    probes = people[who[:50]] + 0.25 * jitter / np.linalg.norm(jitter, axis=1, keepdims=True)
    recall = []
    for q in probes:
        exact = np.argsort(np.linalg.norm(x - q, axis=1))[:10]
        found = index.search(q, 256)
        rows = [int.from_bytes(c.h, "little") - 1 for c in found]
        top = sorted(rows, key=lambda r: float(np.linalg.norm(x[r] - q)))[:10]  # re-ranked exactly
        recall.append(len(set(top) & set(exact.tolist())) / 10)
    assert np.mean(recall) >= 0.9
    assert len(index.parts) == 1 and index.parts[t0 // DAY_MS].live == 20_000


def test_a_day_mostly_past_retention_is_compacted_and_still_searched_right():
    """With a retention shorter than a day, a day's partition kept a row for every face added that
    day; once half of its rows are removed they are dropped and the rest renumbered: the faces kept
    are found with their time and camera (filters included, and from the day's file), the expired and
    the erased ones are not, and the day holds as many rows as faces."""
    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    x = model.sample(3000, np.random.default_rng(7)).astype(np.float32)
    index = HistoryIndex(train_template(128, 64, 16), nprobe=64)
    index.COMPACT_ROWS = 1000
    t0 = 1_790_000_000_000 // DAY_MS * DAY_MS + 1000
    hashes = [int(i).to_bytes(8, "little") for i in range(1, 3001)]
    times = [t0 + i * 10 for i in range(3000)]
    cams = [f"cam-{i % 3}" for i in range(3000)]
    index.add(hashes, times, cams, x)
    assert index.remove([(hashes[2999], times[2999])]) == 1
    assert index.expire(times[2000]) == 2000
    day = t0 // DAY_MS
    assert index.parts[day].n == index.parts[day].live == index.rows() == 999

    def found(idx, i, **filters):
        return {(c.h, c.capture_ms, c.camera_id) for c in idx.search(x[i], 20, **filters)}

    copy = HistoryIndex(train_template(128, 64, 16), nprobe=64)  # what a restart loads from the day's file
    copy.load_partition(day, index.dump_partition(day))
    copy.cameras, copy._camera_no = index.cameras, index._camera_no
    for idx in (index, copy):
        for i in (2000, 2500, 2998):
            assert (hashes[i], times[i], cams[i]) in found(idx, i)
            assert all(c == cams[i] for _, _, c in found(idx, i, camera_ids=[cams[i]]))
            assert all(t >= times[i] for _, t, _ in found(idx, i, since_ms=times[i]))
        for i in (0, 1999, 2999):
            assert not {h for h, _, _ in found(idx, i)} & {hashes[i]}
