"""The REST API over a real HTTP server: auth, faces, identities, matching, retrospective search, system routes."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest
from fastapi.routing import iter_route_contexts
from server_testkit import API_KEY, observation

from facecodec import base_layer
from facecodec.verification import pair_distances

pytestmark = pytest.mark.slow
# Open without credentials: health, the dashboard's login form and the redirect of "/" to it
# (no data in either), and the dashboard's static files (a Mount, checked on its own below).
OPEN_ROUTES = {"/healthz", "/readyz", "/", "/ui/login"}
STATIC_MOUNT = "/ui/static"


def _concrete(path: str) -> str:
    return path.replace("{face_id}", "f-1").replace("{identity_id}", "i-1").replace("{feature_id}", "x-1")


def test_every_route_but_health_refuses_requests_without_a_valid_api_key(server):
    contexts = list(iter_route_contexts(server.server.app.routes))
    assert [r.path for r in contexts if getattr(r, "methods", None) is None] == [STATIC_MOUNT]
    routes = [(m, r.path) for r in contexts if getattr(r, "methods", None) for m in r.methods]
    assert len(routes) >= 20 and ("GET", "/openapi.json") in routes
    with httpx.Client(base_url=server.http_url, timeout=10) as anon:
        for method, path in routes:
            if path in OPEN_ROUTES:
                continue
            for headers in ({}, {"X-API-Key": "wrong-key-123"}, {"Authorization": "Bearer wrong-key-123"}):
                r = anon.request(method, _concrete(path), headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
        # the static mount serves the dashboard's own CSS/JS files and nothing else
        assert anon.get(f"{STATIC_MOUNT}/dashboard.css").status_code == 200
        for path in ("../__init__.py", "..%2F__init__.py", "../templates/base.html", "nope.js"):
            assert anon.get(f"{STATIC_MOUNT}/{path}").status_code == 404, path
        assert anon.get("/stats", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert anon.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200


def test_health_and_readiness_answer_without_credentials(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        r = anon.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready"


def test_openapi_document_lists_the_routes_of_the_issue(api):
    paths = api.get("/openapi.json").json()["paths"]
    for p in ("/faces", "/faces/{face_id}", "/faces/{face_id}/image", "/search", "/verify", "/identify",
              "/identities", "/identities/{identity_id}", "/cameras", "/stats", "/metrics", "/healthz", "/readyz"):
        assert p in paths, p


def test_list_faces_filters_by_camera_time_identity_and_matched_and_pages(server, api, edges, samples):
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    others = [s for s in samples if s.person != person][:4]
    ident = api.post("/identities", json={"name": person, "features": [{"feature": mine[0].feature.tolist()}]}).json()
    t0 = int(time.time() * 1000) - 60_000
    e1, e2 = edges("cam-1"), edges("cam-2")
    e1.send(*[observation(f"c1-{i}", s.base, t_ms=t0 + i * 1000) for i, s in enumerate(others)])
    e2.send(*[observation(f"c2-{i}", s.base, camera_id="cam-2", t_ms=t0 + 10_000 + i * 1000)
              for i, s in enumerate(mine[1:])])

    def ids(**params):
        return [f["face_id"] for f in api.get("/faces", params=params).json()["items"]]

    assert ids(camera="cam-1") == ["c1-3", "c1-2", "c1-1", "c1-0"]  # newest first
    assert ids(camera="cam-1", since_ms=t0 + 1000, until_ms=t0 + 2000) == ["c1-2", "c1-1"]
    assert set(ids(identity=ident["identity_id"])) == {f"c2-{i}" for i in range(len(mine) - 1)}
    assert set(ids(matched=True)) == set(ids(camera="cam-2"))
    assert set(ids(matched=False)) == set(ids(camera="cam-1"))
    page1 = api.get("/faces", params={"limit": 3}).json()
    page2 = api.get("/faces", params={"limit": 3, "offset": page1["next_offset"]}).json()
    everything = [f["face_id"] for f in page1["items"] + page2["items"]]
    assert len(page1["items"]) == 3 and everything == ids(limit=500)[:len(everything)]
    assert len(set(everything)) == len(everything)


def test_get_face_returns_metadata_and_match_but_no_feature(api, edges, samples):
    edges("cam-1").send(observation("g-1", samples[0].base))
    face = api.get("/faces/g-1").json()
    assert face["camera_id"] == "cam-1" and face["base_layer_bytes"] == len(samples[0].base)
    assert face["box"] == {"x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 140.0} and face["match"] is None
    assert face["enhancement_cached"] is False
    assert "feature" not in face and "base_layer" not in face


def test_unknown_face_is_404_and_bad_parameters_are_422(api, edges, samples):
    edges("cam-1").send(observation("p-1", samples[0].base))
    assert api.get("/faces/nope").status_code == 404
    assert api.get("/faces/nope/image", params={"layer": "full"}).status_code == 404
    assert api.get("/faces/p-1/image", params={"layer": "hd"}).status_code == 422
    assert api.get("/faces/p-1/image", params={"layer": "full", "quality": 500}).status_code == 422
    assert api.get("/faces/p-1/image", params={"layer": "full", "codec": "gif"}).status_code == 422
    assert api.get("/faces", params={"limit": 0}).status_code == 422
    assert api.post("/verify", json={"a": {"face_id": "p-1"}}).status_code == 422
    assert api.post("/verify", json={"a": {"feature": [0.1] * 3}, "b": {"face_id": "p-1"}}).status_code == 422
    r = api.post("/identify", json={"probe": {"base_layer": base64.b64encode(b"\xb1junk").decode()}})
    assert r.status_code == 422 and "base_layer" in r.json()["detail"]


def test_base_layer_image_is_a_clear_503_while_no_reconstruction_model_is_installed(api, edges, samples,
                                                                                     no_reconstruction):
    edges("cam-1").send(observation("b-1", samples[0].base))
    r = api.get("/faces/b-1/image", params={"layer": "base"})
    assert r.status_code == 503 and "no reconstruction model is installed" in r.json()["detail"]


def test_identities_crud_and_enrolment_from_feature_base_layer_and_stored_face(api, edges, samples):
    a, b = samples[0], next(s for s in samples if s.person == samples[0].person and s is not samples[0])
    edges("cam-1").send(observation("e-1", b.base))
    created = api.post("/identities", json={"name": "Ann", "notes": "visitor"})
    assert created.status_code == 201
    iid = created.json()["identity_id"]
    f1 = api.post(f"/identities/{iid}/features", json={"feature": a.feature.tolist()})
    f2 = api.post(f"/identities/{iid}/features", json={"base_layer": base64.b64encode(a.base).decode()})
    f3 = api.post(f"/identities/{iid}/features", json={"face_id": "e-1"})
    assert {f1.status_code, f2.status_code, f3.status_code} == {201}
    got = api.get(f"/identities/{iid}").json()
    assert got["name"] == "Ann" and len(got["feature_ids"]) == 3 and got["watchlist"] is False
    patched = api.patch(f"/identities/{iid}", json={"name": "Ann B.", "watchlist": True}).json()
    assert patched["name"] == "Ann B." and patched["watchlist"] is True and patched["notes"] == "visitor"
    assert api.get("/identities").json()["total"] == 1
    assert api.delete(f"/identities/{iid}/features/{f1.json()['feature_id']}").status_code == 204
    assert len(api.get(f"/identities/{iid}").json()["feature_ids"]) == 2
    assert api.delete(f"/identities/{iid}").status_code == 200
    assert api.get(f"/identities/{iid}").status_code == 404
    assert api.post("/identities/nobody/features", json={"feature": a.feature.tolist()}).status_code == 404
    assert api.post("/identities", json={"name": ""}).status_code == 422


def test_identify_finds_the_enrolled_person_and_verify_agrees_with_facecodec_distance(server, api, samples):
    people = sorted({s.person for s in samples})
    ids = {}
    for p in people:
        first = next(s for s in samples if s.person == p)
        ids[p] = api.post("/identities", json={"name": p, "features": [{"feature": first.feature.tolist()}]}).json()["identity_id"]
    probe = [s for s in samples if s.person == people[1]][2]
    r = api.post("/identify", json={"probe": {"base_layer": base64.b64encode(probe.base).decode()}, "k": 3}).json()
    assert r["match"]["identity_id"] == ids[people[1]] and r["match"]["name"] == people[1]
    assert len(r["candidates"]) == 3 and r["index"] == "numpy-exact"
    assert [c["distance"] for c in r["candidates"]] == sorted(c["distance"] for c in r["candidates"])
    other = next(s for s in samples if s.person == people[2])
    v = api.post("/verify", json={"a": {"feature": probe.feature.tolist()}, "b": {"feature": other.feature.tolist()}}).json()
    expected = float(pair_distances(probe.feature[None], other.feature[None])[0])
    assert v["distance"] == pytest.approx(expected, rel=1e-5) and v["same"] is (expected <= v["threshold"])
    v2 = api.post("/verify", json={"a": {"identity_id": ids[people[1]]}, "b": {"feature": probe.feature.tolist()}}).json()
    assert v2["same"] is True and v2["threshold"] == server.settings.match_threshold


def test_retrospective_search_finds_earlier_observations_with_camera_and_time_filters(api, edges, samples):
    person = samples[4].person
    mine = [s for s in samples if s.person == person]
    others = [s for s in samples if s.person != person]
    week_ago = int(time.time() * 1000) - 6 * 24 * 3600 * 1000
    e1, e2 = edges("cam-1"), edges("cam-2")
    e1.send(observation("old-mine", mine[1].base, t_ms=week_ago),
            *[observation(f"old-other-{i}", s.base, t_ms=week_ago + i) for i, s in enumerate(others[:10])])
    e2.send(observation("new-mine", mine[2].base, camera_id="cam-2"))
    ident = api.post("/identities", json={"name": person, "features": [{"feature": mine[0].feature.tolist()}]}).json()
    hits = api.post("/search", json={"probe": {"identity_id": ident["identity_id"]}}).json()
    assert {h["face_id"] for h in hits["hits"]} == {"old-mine", "new-mine"} and hits["scanned"] == 12
    only_cam1 = api.post("/search", json={"probe": {"identity_id": ident["identity_id"]}, "camera_ids": ["cam-1"]}).json()
    assert [h["face_id"] for h in only_cam1["hits"]] == ["old-mine"]
    recent = api.post("/search", json={"probe": {"identity_id": ident["identity_id"]},
                                       "since_ms": week_ago + 1000}).json()
    assert [h["face_id"] for h in recent["hits"]] == ["new-mine"]
    capped = api.post("/search", json={"probe": {"identity_id": ident["identity_id"]}, "max_scan": 5}).json()
    if capped["index"] == "exact-scan":  # the search index still loading: a scan, which max_scan bounds
        assert capped["scanned"] == 5 and capped["truncated"] is True
    else:  # the index's candidates, re-ranked: nothing to bound
        assert capped["scanned"] == 12 and capped["truncated"] is False and len(capped["hits"]) == 2
    # every hit is a true match by facecodec's metric on the stored decoded features
    for h in hits["hits"]:
        stored = base_layer.decode(mine[1].base if h["face_id"] == "old-mine" else mine[2].base).feature
        assert h["distance"] == pytest.approx(float(np.linalg.norm(stored - mine[0].feature)), rel=1e-4)


def test_enrolment_from_an_uploaded_photo_matches_later_observations(api, edges, samples):
    from pathlib import Path

    photo = sorted((Path(__file__).parent.parent / "data" / "faces" / samples[0].person).glob("*.jpg"))[0]
    iid = api.post("/identities", json={"name": samples[0].person}).json()["identity_id"]
    r = api.post(f"/identities/{iid}/images", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 201 and r.json()["quality"]["probability"] > 0.9
    bad = api.post(f"/identities/{iid}/images", files={"image": ("x.jpg", b"not an image", "image/jpeg")})
    assert bad.status_code == 422
    later = [s for s in samples if s.person == samples[0].person][1]
    edges("cam-1").send(observation("ph-1", later.base))
    assert api.get("/faces/ph-1").json()["match"]["identity_id"] == iid


def test_cameras_stats_metrics_and_events_report_the_ingest(api, edges, samples):
    e = edges("cam-1")
    e.send(observation("s-1", samples[0].base), observation("s-2", samples[1].base),
           observation("s-bad", b"\x00\x01"))
    e.send(observation("s-1", samples[0].base))
    cams = {c["camera_id"]: c for c in api.get("/cameras").json()}
    assert cams["cam-1"]["online"] is True and cams["cam-1"]["faces_stored"] == 2
    assert cams["cam-1"]["agent_version"] == "test-edge/1"
    stats = api.get("/stats").json()
    assert stats["faces_stored"] == 2 and stats["cameras_online"] == 1
    assert stats["observations"] == {"stored": 2.0, "duplicate": 1.0, "erased": 0.0, "rejected": 1.0}
    text = api.get("/metrics").text
    assert 'faceserver_observations_total{outcome="stored"} 2.0' in text
    assert 'faceserver_rejections_total{field="base_layer"} 1.0' in text
    events = api.get("/events").json()
    assert [ev["face_id"] for ev in events if ev["type"] == "observation"] == ["s-1", "s-2"]
    e.close()
    deadline = time.monotonic() + 10
    while api.get("/cameras").json()[0]["online"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
