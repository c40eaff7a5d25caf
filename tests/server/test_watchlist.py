"""Watchlist hits grouped into alerts, against a real server, Redis and edge-side gRPC streams: grouped by
identity while the pauses stay under FACESERVER_WATCHLIST_GAP_S (hits, tracks, cameras, first and last
seen, the closest as thumbnail), acknowledged or dismissed with an audit entry and an event, a later hit
opening a new group; and a face enrolled from the dashboard matched at once (record, events, names)."""

from __future__ import annotations

import time

import pytest
from server_testkit import observation

pytestmark = pytest.mark.slow
GAP_S = 60


@pytest.fixture
def server(make_server):
    return make_server(watchlist_gap_s=GAP_S)


def watched(api, samples, name="Wanted Person") -> str:
    r = api.post("/identities", json={"name": name, "watchlist": True,
                                      "features": [{"feature": samples[0].feature.tolist()}]})
    assert r.status_code == 201
    return r.json()["identity_id"]


def test_hits_of_one_person_are_one_group_until_a_long_pause(server, api, edges, samples):
    ident = watched(api, samples)
    cam1, cam2 = edges("cam-1"), edges("cam-2")
    t0 = int(time.time() * 1000) - 600_000
    same = samples[0].base
    # five sightings 20 s apart on two cameras and three tracks; then, after a pause longer than the gap, two more
    first = [("h1", cam1, "cam-1", 0, "tr-a"), ("h2", cam1, "cam-1", 20, "tr-a"), ("h3", cam2, "cam-2", 40, "tr-b"),
             ("h4", cam1, "cam-1", 60, "tr-c"), ("h5", cam1, "cam-1", 80, "tr-c")]
    later = [("h6", cam1, "cam-1", 300, "tr-d"), ("h7", cam1, "cam-1", 310, "tr-d")]
    for face_id, edge, cam, s, track in first + later:
        edge.send(observation(face_id, same, camera_id=cam, t_ms=t0 + s * 1000, track_id=track))
    other = next(f.base for f in samples if f.person != samples[0].person)  # someone else: no hit at all
    cam1.send(observation("not-a-hit", other, t_ms=t0 + 30_000))
    cam2.send(observation("late", same, camera_id="cam-2", t_ms=t0 + 50_000, track_id="tr-b"))  # replayed late
    page = api.get("/watchlist/hits").json()
    assert page["gap_s"] == GAP_S
    newer, older = page["items"]
    assert (older["hits"], older["tracks"], sorted(older["cameras"])) == (6, 3, ["cam-1", "cam-2"])
    assert (older["first_ms"], older["last_ms"]) == (t0, t0 + 80_000)
    assert older["best_face_id"] in {"h1", "h2", "h3", "h4", "h5", "late"} and older["latest_face_id"] == "h5"
    assert older["identity_id"] == ident and older["name"] == "Wanted Person" and older["state"] == "open"
    assert (newer["hits"], newer["tracks"], newer["latest_face_id"]) == (2, 1, "h7")
    assert isinstance(older["best_distance"], float) and older["best_distance"] <= server.settings.match_threshold


def test_acknowledge_and_dismiss_are_audited_and_close_the_group(server, api, edges, samples):
    ident = watched(api, samples)
    edge = edges("cam-1")
    t0 = int(time.time() * 1000) - 300_000
    for i in range(3):
        edge.send(observation(f"a{i}", samples[0].base, t_ms=t0 + i * 10_000, track_id="tr-1"))
    (group,) = api.get("/watchlist/hits").json()["items"]
    r = api.post(f"/watchlist/hits/{group['group_id']}/acknowledge")
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    (entry,) = [e for e in api.get("/audit").json() if e["action"] == "acknowledge_hits"]
    assert entry["group"] == group["group_id"] and entry["hits"] == 3 and entry["identity_id"] == ident
    ack = [e for e in api.get("/events").json() if e["type"] == "watchlist_ack"]
    assert ack[-1]["group"] == group["group_id"] and ack[-1]["action"] == "acknowledge" and ack[-1]["hits"] == 3
    # the same person again within the gap: a new, open group (the handled one stays handled)
    edge.send(observation("a3", samples[0].base, t_ms=t0 + 30_000, track_id="tr-1"))
    items = api.get("/watchlist/hits").json()["items"]
    assert [(g["state"], g["hits"]) for g in items] == [("open", 1), ("acknowledged", 3)]
    assert items[1]["handled_by"] == entry["who"]
    assert api.post(f"/watchlist/hits/{items[0]['group_id']}/dismiss").json()["state"] == "dismissed"
    assert [g["state"] for g in api.get("/watchlist/hits").json()["items"]] == ["acknowledged"]
    assert [g["state"] for g in api.get("/watchlist/hits", params={"state": "all"}).json()["items"]] == \
        ["dismissed", "acknowledged"]
    assert api.post("/watchlist/hits/1-1/acknowledge").status_code == 404


def test_an_erased_hit_leaves_its_group(server, api, edges, samples):
    watched(api, samples)
    edge = edges("cam-1")
    t0 = int(time.time() * 1000) - 100_000
    for i in range(2):
        edge.send(observation(f"e{i}", samples[0].base, t_ms=t0 + i * 1000, track_id=f"tr-{i}"))
    assert api.delete("/faces/e1").status_code == 200
    (group,) = api.get("/watchlist/hits").json()["items"]
    assert (group["hits"], group["tracks"], group["latest_face_id"], group["best_face_id"]) == (1, 1, "e0", "e0")


def test_a_face_enrolled_as_an_identity_is_matched_at_once_and_renames_show(server, api, edges, samples):
    edge = edges("cam-1")
    edge.send(observation("walk-in", samples[2].base))
    assert api.get("/faces/walk-in").json()["match"] is None
    ident = api.post("/identities", json={"name": "Visitor", "features": [{"face_id": "walk-in"}]}).json()
    match = api.get("/faces/walk-in").json()["match"]
    assert match == {"identity_id": ident["identity_id"], "name": "Visitor", "distance": 0.0}
    assert [f["face_id"] for f in api.get("/faces", params={"identity": ident["identity_id"]}).json()["items"]] == \
        ["walk-in"]
    api.patch(f"/identities/{ident['identity_id']}", json={"name": "Visitor 1"})
    events = api.get("/events").json()
    matched = [e for e in events if e["type"] == "face_matched"]
    assert matched[-1]["face_id"] == "walk-in" and matched[-1]["distance"] == 0.0
    assert matched[-1]["capture_time_ms"] > 0 and matched[-1]["identity_id"] == ident["identity_id"]
    updates = [e for e in events if e["type"] == "identity_updated"]
    assert len(updates) == 2 and updates[-1]["name"] == "Visitor 1"  # the name as it is now, never stored
    assert api.get("/faces/walk-in").json()["match"]["name"] == "Visitor 1"
    # erasing the identity erases the face enrolled from it too, as every face matched to it
    assert api.delete(f"/identities/{ident['identity_id']}").json()["faces_erased"] == ["walk-in"]
