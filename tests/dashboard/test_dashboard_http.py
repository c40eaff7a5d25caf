"""The dashboard over HTTP (no browser): login and sessions, CSRF, pages rendered from real data,
and the live events stream (SSE), against a real server, Redis and edge-side gRPC clients."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest
from dashboard_testkit import login
from server_testkit import API_KEY, Edge, observation

from analysis_server.face_images import reconstruction_installed
from analysis_server.sessions import COOKIE

pytestmark = pytest.mark.slow


def _csrf(client: httpx.Client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui").text).group(1)


def _edge(server, camera_id: str = "cam-1", **kw) -> Edge:
    edge = Edge(server.grpc_target, camera_id, **kw)
    edge.hello()
    deadline = time.monotonic() + 10
    while server.services.link.session(camera_id) is None:
        assert time.monotonic() < deadline, "the server never registered the stream"
        time.sleep(0.01)
    return edge


@pytest.mark.parametrize("path", ["/ui", "/ui/gallery", "/ui/search", "/ui/faces/f-1", "/ui/faces/f-1/audit"])
def test_pages_without_a_session_answer_401_with_the_login_form(server, path):
    r = httpx.get(server.http_url + path, follow_redirects=False)
    assert r.status_code == 401 and 'name="api_key"' in r.text
    assert f'name="next" value="{path}"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]


def test_the_api_and_the_event_stream_stay_refused_without_credentials(server):
    for path in ("/events/live", "/faces", "/stats"):
        assert httpx.get(server.http_url + path).status_code == 401
    bogus = httpx.Client(base_url=server.http_url, cookies={COOKIE: "not-a-session"})
    assert bogus.get("/stats").status_code == 401 and bogus.get("/ui").status_code == 401


def test_login_sets_an_httponly_strict_cookie_and_a_wrong_key_is_refused(server):
    with httpx.Client(base_url=server.http_url) as c:
        bad = c.post("/ui/login", data={"api_key": "not-the-key", "next": "/ui/gallery"})
        assert bad.status_code == 401 and "not valid" in bad.text and COOKIE not in c.cookies
        ok = c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui/gallery"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/gallery"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert API_KEY not in cookie
        assert c.get("/ui/gallery").status_code == 200 and c.get("/stats").status_code == 200
        # the login itself is in the audit log, under the key's fingerprint
        assert any(e["action"] == "dashboard_login" for e in c.get("/audit").json())
    metrics = httpx.get(server.http_url + "/metrics", headers={"X-API-Key": API_KEY}).text
    assert 'faceserver_auth_failures_total{interface="dashboard"}' in metrics


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/ui", "/faces", "/ui\\@x"])
def test_login_never_redirects_off_the_dashboard(server, target):
    r = httpx.post(server.http_url + "/ui/login", data={"api_key": API_KEY, "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/ui"


def test_with_the_cookie_reads_work_but_changes_need_the_sessions_csrf_token(server):
    with login(server.http_url) as c:
        assert c.post("/identities", json={"name": "No Token"}).status_code == 403
        assert c.post("/identities", json={"name": "Bad"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
        r = c.post("/identities", json={"name": "With Token"}, headers={"X-CSRF-Token": _csrf(c)})
        assert r.status_code == 201
        ident = r.json()["identity_id"]
        assert c.delete(f"/identities/{ident}", headers={"X-CSRF-Token": _csrf(c)}).status_code == 200
        # an API key still works alone, cookie or not
        assert c.post("/identities", json={"name": "Keyed"}, headers={"X-API-Key": API_KEY}).status_code == 201


def test_logout_ends_the_session_on_the_server(server):
    with login(server.http_url) as c:
        token = c.cookies[COOKIE]
        assert c.post("/ui/logout", data={"csrf": "wrong"}).status_code == 422
        r = c.post("/ui/logout", data={"csrf": _csrf(c)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    replay = httpx.Client(base_url=server.http_url, cookies={COOKIE: token})
    assert replay.get("/ui").status_code == 401 and replay.get("/stats").status_code == 401


def test_a_session_dies_with_its_api_key(server):
    from analysis_server.sessions import SessionStore
    from analysis_server.settings import fingerprint

    s = server.services
    old = SessionStore(s.redis, s.store.keys, 60, ["retired-key-0001"])
    token, _ = server.call(old.create("key:" + fingerprint("retired-key-0001")))
    assert server.call(old.get(token)) is not None
    assert server.call(s.sessions.get(token)) is None  # this server no longer has that key
    assert httpx.get(server.http_url + "/stats", cookies={COOKIE: token}).status_code == 401


def test_live_page_lists_each_camera_with_its_latest_faces(server, samples):
    edge = _edge(server, "cam-2")
    try:
        edge.send(observation("live-1", samples[0].base, camera_id="cam-2"))
        with login(server.http_url) as c:
            page = c.get("/ui").text
        assert 'data-camera-id="cam-2"' in page and 'href="/ui/faces/live-1"' in page
        assert "online" in page and "Watchlist hits" in page
        assert re.search(r'data-last-event-id="\d+-\d+"', page)
    finally:
        edge.close()


def test_face_page_shows_the_layers_bytes_and_audit_trail(server, samples):
    s = samples[1]
    edge = _edge(server, "cam-1", textures={"page-1": (s.chip, s.base)})
    try:
        edge.send(observation("page-1", s.base))
        with login(server.http_url) as c:
            page = c.get("/ui/faces/page-1").text
            assert f"{len(s.base)} B" in page and "Verify" in page and "112×112" in page
            if not reconstruction_installed():
                assert "No reconstruction model installed" in page
            else:
                assert 'data-src="/faces/page-1/image?layer=base"' in page
            assert "Nobody has looked at this face yet" in page
            assert c.get("/faces/page-1/image", params={"layer": "full"}).status_code == 200
            audit = c.get("/ui/faces/page-1/audit").text
            assert "full" in audit and "200" in audit and "key:" in audit
            assert "cached" in c.get("/ui/faces/page-1").text
            assert c.get("/ui/faces/unknown-face").status_code == 404
    finally:
        edge.close()


def test_search_by_identity_finds_faces_seen_before_the_enrolment(server, samples):
    by_person: dict[str, list] = {}
    for smp in samples:
        by_person.setdefault(smp.person, []).append(smp)
    person, same = next((p, v) for p, v in by_person.items() if len(v) >= 3)
    other = next(v[0] for p, v in by_person.items() if p != person)
    edge = _edge(server, "cam-1")
    try:
        edge.send(observation("s-a", same[0].base), observation("s-b", same[1].base, camera_id="cam-1"),
                  observation("s-c", other.base))
        api = httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY})
        ident = api.post("/identities", json={"name": "Searched Person",
                                              "features": [{"face_id": "s-a"}]}).json()["identity_id"]
        with login(server.http_url) as c:
            page = c.get("/ui/search", params={"identity": ident, "camera": "cam-1"}).text
            assert "/ui/faces/s-a" in page and "/ui/faces/s-b" in page and "/ui/faces/s-c" not in page
            listed = c.get("/ui/search", params={"camera": "cam-1"}).text
            assert all(f"/ui/faces/{f}" in listed for f in ("s-a", "s-b", "s-c"))
            assert c.get("/ui/search", params={"camera": "bad id!"}).status_code == 422
            gallery = c.get("/ui/gallery").text
            assert "Searched Person" in gallery and f'data-identity-id="{ident}"' in gallery
    finally:
        edge.close()


def _sse_events(lines, want: int, timeout: float = 15) -> list[dict]:
    out: list[dict] = []
    end = time.monotonic() + timeout
    for line in lines:
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if len(out) >= want:
                break
        assert time.monotonic() < end, f"only {len(out)} events"
    return out


def test_live_events_replay_after_last_event_id_then_follow_the_stream(server, samples):
    edge = _edge(server, "cam-1")
    api = httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30)
    try:
        edge.send(observation("ev-1", samples[2].base))
        edge.send(observation("ev-2", samples[3].base))
        recent = api.get("/events", params={"count": 1000}).json()
        first = next(e["id"] for e in recent if e.get("face_id") == "ev-1")
        with login(server.http_url) as c, c.stream("GET", "/events/live", headers={"Last-Event-ID": first},
                                                   params={"keepalive_s": 1}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            replayed = _sse_events(lines, 1)
            assert replayed[0]["face_id"] == "ev-2" and replayed[0]["type"] == "observation"
            edge.send(observation("ev-3", samples[4].base))
            live = _sse_events(lines, 1)
            assert live[0]["face_id"] == "ev-3" and live[0]["camera_id"] == "cam-1"
        assert server.services.live.subscribers <= 1  # the closed stream left (or is leaving) the hub
    finally:
        api.close()
        edge.close()


def test_open_event_streams_do_not_hold_up_shutdown(make_server):
    server = make_server("dash-stop")
    ended = threading.Event()

    def follow() -> None:
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
            with c.stream("GET", "/events/live") as r:
                for _ in r.iter_lines():
                    pass
        ended.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while server.services.live.subscribers == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5 and ended.wait(5)
