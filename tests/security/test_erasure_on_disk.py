"""Erased means gone from the disk: nothing of an erased or expired face is left in Redis's files.

The attack (issue 15, item 1): someone who can read the server's data folder (a backup, a
stolen disk, a careless ``chmod``) greps ``appendonly.aof`` and ``faces.rdb``. Before, after
``DELETE /faces/{id}`` and ``DELETE /identities/{id}`` answered 200, and after faces expired
by retention, the base layers, features, cached enhancement layers, enrolled features and the
identity's name and notes were gone from Redis's memory but still in ``appendonly.aof``: Redis
rewrites that file only when it has doubled past 64 MB. The files were 0644 in a 0755 folder.

Here a real redis-server (the embedded one, its files on disk) takes real faces over a real gRPC
stream; the test erases and lets one face expire, then reads every byte of every file in the data
folder and below it (the search index's files too: ``history/<prefix>/day-*.bin`` hold each face's
product-quantization code, an approximation of its feature): none of the erased values may be found
once the rewrite that follows an erasure (``FACESERVER_COMPACT_AFTER_ERASE_S``) and the sweep that
follows expiry have run.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest
import redis
from server_testkit import API_KEY, Edge, observation

from analysis_server.keys import Keys
from testkit.processes import wait_until

pytestmark = pytest.mark.slow

RETENTION_S = 40
EXPIRES_IN_S = 4


def chunks(value: bytes, size: int = 24) -> list[bytes]:
    """``value`` cut into pieces long enough to be unique, so a partial copy is found too."""
    return [value[i:i + size] for i in range(0, max(1, len(value) - size + 1), size)]


def found_in(folder: Path, needles: dict[str, list[bytes]]) -> dict[str, list[str]]:
    """file (path under ``folder``) -> which needles (by label) its bytes contain."""
    out: dict[str, list[str]] = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        hits = [label for label, pieces in needles.items() if any(p in data for p in pieces)]
        if hits:
            out[str(f.relative_to(folder))] = hits
    return out


def _face_needles(server, r: redis.Redis, keys: Keys, face_id: str) -> dict[str, list[bytes]]:
    from server_testkit import stored_face

    from analysis_server import records as rec

    stored = stored_face(r, keys.prefix, face_id)
    enh = r.get(keys.enhancement(rec.bucket_of(rec.face_hash(face_id)), face_id))
    codes = server.services.history.index.codes_of(rec.face_hash(face_id))
    assert stored and enh and codes, f"face {face_id} is not stored with a cached enhancement layer and indexed"
    return {f"{face_id}:base": [stored["base"]], f"{face_id}:enh": chunks(enh, 48), f"{face_id}:code": codes}


@pytest.fixture
def embedded(make_server, tmp_path):
    """A server on its own embedded redis-server (files in ``folder``), compacting 0.5 s after an erasure;
    its search index (files under ``folder/history``) is rewritten as soon."""
    folder = tmp_path / "server-data"
    server = make_server(redis_url=None, data_dir=folder, retention_s=RETENTION_S, sweep_interval_s=0.5,
                         compact_after_erase_s=0.5)
    server.call(server.services.history.ready.wait(), timeout=120)
    client = redis.Redis(unix_socket_path=server.server.embedded.socket_path)
    yield server, folder, client
    client.close()


@pytest.fixture
def stored(embedded, samples):
    """Four faces on a real stream (their enhancement layers cached) and an identity with a name,
    notes and an enrolled feature, one face matched to it; ``exp-1`` expires ``EXPIRES_IN_S`` from
    now. Yields (server, folder, Redis client, API client, identity id, needles: label -> byte pieces
    of every erased value, control: keep-1's base layer, which nobody erases)."""
    server, folder, r = embedded
    keys = Keys(server.settings.key_prefix)
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    others = [s for s in samples if s.person != person]
    name, notes = "Erasable Person 7f3a", "seen at gate 4, notes 91c2"
    faces = {"del-1": others[0], "idf-1": mine[1], "exp-1": others[1], "keep-1": others[2]}
    edge = Edge(server.grpc_target, "cam-1", textures={f: (s.chip, s.base) for f, s in faces.items()})
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        try:
            iid = api.post("/identities", json={"name": name, "notes": notes,
                                                "features": [{"feature": mine[0].feature.tolist()}]}).json()["identity_id"]
            now = int(time.time() * 1000)
            edge.hello()
            t = {f: now for f in faces} | {"exp-1": now - (RETENTION_S - EXPIRES_IN_S) * 1000}
            assert sorted(edge.send(*[observation(f, s.base, t_ms=t[f]) for f, s in faces.items()]).face_ids) == \
                sorted(faces)
            for f in faces:  # cache each face's enhancement layer (fetched from the edge)
                assert api.get(f"/faces/{f}/image", params={"layer": "full"}).status_code == 200
            from server_testkit import stored_face

            assert stored_face(r, keys.prefix, "idf-1")["identity"].decode() == iid
            server.call(server.services.history.catch_up())
            needles = {}
            for f in ("del-1", "idf-1", "exp-1"):
                needles |= _face_needles(server, r, keys, f)
            enrolled = next(iter(r.hgetall(keys.identity_features(iid)).values()))
            needles |= {"name": [name.encode()], "notes": [notes.encode()], "enrolled": chunks(enrolled)}
            from analysis_server import records as rec

            keep_h = rec.face_hash("keep-1")
            kept = b"\0".join([r.hget(keys.records(rec.bucket_of(keep_h)), keep_h),
                               r.get(keys.enhancement(rec.bucket_of(keep_h), "keep-1")),
                               *server.services.history.index.codes_of(keep_h)])
            # Pieces every payload of a kind shares (a JPEG's tables) are not evidence of one face.
            needles = {k: [p for p in pieces if p not in kept] for k, pieces in needles.items()}
            assert all(needles.values())
            control = {"keep-1": [stored_face(r, keys.prefix, "keep-1")["base"]]}
            wait_until(lambda: "appendonly.aof" in found_in(folder, control), 10, "the AOF to hold the faces")
            server.call(server.services.history.save())  # the search index's files, as a snapshot leaves them
            where = found_in(folder, needles)
            assert "appendonly.aof" in where  # what the test looks for is there to find
            assert [f for f, labels in where.items() if f.startswith("history/") and
                    any(x.endswith(":code") for x in labels)]
            yield server, folder, r, api, iid, needles, control
        finally:
            edge.close()


def _gone(folder: Path, needles: dict[str, list[bytes]], within_s: float) -> dict[str, list[str]]:
    deadline = time.monotonic() + within_s
    while (left := found_in(folder, needles)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_erased_faces_and_identities_leave_the_aof_and_rdb_files(stored):
    server, folder, r, api, iid, needles, control = stored
    keys = Keys(server.settings.key_prefix)
    assert api.delete("/faces/del-1").status_code == 200
    assert sorted(api.delete(f"/identities/{iid}").json()["faces_erased"]) == ["idf-1"]
    erased = {k: v for k, v in needles.items() if not k.startswith(("exp-1", "keep-1"))}
    assert _gone(folder, erased, 15) == {}, "erased values are still in Redis's files"
    assert "appendonly.aof" in found_in(folder, control)  # the face nobody erased is kept
    assert api.get("/faces/keep-1").status_code == 200
    # Audit entries and events keep ids, nothing that identifies a person's face or name.
    logged = b"".join(v for _, e in r.xrange(keys.audit) + r.xrange(keys.events) for kv in e.items() for v in kv)
    assert iid.encode() in logged and b"del-1" in logged
    assert not [k for k, pieces in needles.items() if any(p in logged for p in pieces)]


def test_expired_faces_leave_the_aof_and_rdb_files(stored):
    server, folder, r, api, iid, needles, control = stored
    keys = Keys(server.settings.key_prefix)
    expired = {k: v for k, v in needles.items() if k.startswith("exp-1")}
    assert _gone(folder, expired, EXPIRES_IN_S + 15) == {}, "an expired face is still in Redis's files"
    from server_testkit import stored_face

    assert stored_face(r, keys.prefix, "exp-1") is None
    assert "appendonly.aof" in found_in(folder, control)
    assert api.get("/faces/keep-1").status_code == 200


def test_the_data_folder_is_private(embedded, samples):
    server, folder, r = embedded
    edge = Edge(server.grpc_target, "cam-1")
    try:
        edge.hello()
        edge.send(observation("priv-1", samples[0].base))
    finally:
        edge.close()
    r.bgsave()
    wait_until(lambda: (folder / "faces.rdb").exists(), 10, "the RDB file")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in folder.iterdir() if f.is_file()}
    assert {"appendonly.aof", "faces.rdb", "redis.log"} <= set(modes)
    assert set(modes.values()) == {oct(0o600)}, modes
    server.call(server.services.history.catch_up())
    server.call(server.services.history.save())
    index_files = [f for f in (folder / "history").rglob("*") if f.is_file()]
    assert index_files and {oct(stat.S_IMODE(f.stat().st_mode)) for f in index_files} == {oct(0o600)}
    assert {oct(stat.S_IMODE(d.stat().st_mode)) for d in (folder / "history").rglob("*") if d.is_dir()} == \
        {oct(0o700)}
