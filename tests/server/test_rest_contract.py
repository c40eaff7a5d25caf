"""The REST API's contract as a script author reads it, over a real server: every status a route answers
is in its OpenAPI entry (401 on every secured route, 404 on every path naming a resource), the events and
the audit log are typed with numbers as numbers, an unknown camera is a 404, and the interactive
documentation is served behind the same sign-in."""

from __future__ import annotations

import time

import httpx
import pytest
from server_testkit import API_KEY, observation

pytestmark = pytest.mark.slow


@pytest.fixture
def doc(api) -> dict:
    return api.get("/openapi.json").json()


def operations(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def test_every_secured_route_documents_401_403_429_and_every_resource_path_404(doc):
    ops = list(operations(doc))
    assert len(ops) >= 25
    for method, path, op in ops:
        codes = set(op["responses"])
        if path not in ("/healthz", "/readyz"):
            assert {"401", "403", "429", "503"} <= codes, (method, path, codes)
        if "{" in path:
            assert "404" in codes, (method, path)
        if "requestBody" in op:
            assert {"413", "415", "422"} <= codes, (method, path, codes)
    by = {(m, p): op for m, p, op in ops}
    for key in (("GET", "/faces/{face_id}"), ("DELETE", "/faces/{face_id}"), ("GET", "/faces/{face_id}/image")):
        assert "404" in by[key]["responses"]
    assert {"410", "501", "502", "504"} <= set(by[("GET", "/faces/{face_id}/image")]["responses"])
    assert "404" in by[("GET", "/faces")]["responses"]  # an unknown camera


def test_statuses_the_server_answers_are_the_documented_ones(server, api, doc, edges, samples):
    edges("cam-1").send(observation("doc-1", samples[0].base))
    anon = httpx.Client(base_url=server.http_url, timeout=10)
    calls = [
        (anon.get, "/faces", {}, "GET", "/faces", 401),
        (api.get, "/faces", {"params": {"camera": "no-such-camera"}}, "GET", "/faces", 404),
        (api.get, "/faces/nope", {}, "GET", "/faces/{face_id}", 404),
        (api.delete, "/faces/nope", {}, "DELETE", "/faces/{face_id}", 404),
        (api.get, "/faces/doc-1/image", {"params": {"layer": "sideways"}}, "GET", "/faces/{face_id}/image", 422),
        (api.get, "/faces/doc-1/image", {"params": {"layer": "full", "purpose": "thumbnail"}}, "GET",
         "/faces/{face_id}/image", 422),
        (api.get, "/identities/nope", {}, "GET", "/identities/{identity_id}", 404),
        (api.post, "/watchlist/hits/1-1/acknowledge", {}, "POST", "/watchlist/hits/{group_id}/acknowledge", 404),
        (api.post, "/search", {"content": b"x", "headers": {"content-type": "text/plain"}}, "POST", "/search", 415),
    ]
    paths = doc["paths"]
    for call, url, kw, method, path, expected in calls:
        r = call(url, **kw)
        assert r.status_code == expected, (method, url, r.status_code, r.text)
        assert str(expected) in paths[path][method.lower()]["responses"], (method, path, expected)
    anon.close()


def test_events_and_audit_are_typed_with_numbers_as_numbers(api, doc, edges, samples):
    schemas = doc["components"]["schemas"]
    for path, model in (("/events", "EventOut"), ("/audit", "AuditEntryOut")):
        items = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"]
        assert items == {"$ref": f"#/components/schemas/{model}"}
        assert schemas[model].get("additionalProperties") is not True
    assert schemas["AuditEntryOut"]["properties"]["status"]["anyOf"][0]["type"] == "integer"
    edges("cam-1").send(observation("typed-1", samples[0].base))
    api.get("/faces/typed-1/image", params={"layer": "base"})
    (obs,) = [e for e in api.get("/events").json() if e["face_id"] == "typed-1"]
    assert obs["type"] == "observation" and isinstance(obs["capture_time_ms"], int)
    assert obs["identity_id"] is None and obs["distance"] is None  # empty in the stream: null, not ""
    (entry,) = api.get("/audit", params={"face_id": "typed-1"}).json()
    assert isinstance(entry["time_ms"], int) and isinstance(entry["status"], int) and entry["layer"] == "base"


def test_an_unknown_camera_is_404_and_a_known_one_without_faces_200(server, api, edges):
    assert api.get("/faces", params={"camera": "cam-2"}).status_code == 404
    r = api.post("/search", json={"probe": {"feature": [0.05] * 128}, "camera_ids": ["cam-2"]})
    assert r.status_code == 404 and "ever streamed" in r.json()["detail"]
    edges("cam-2")  # it has connected: known now, even with no face stored
    deadline = time.monotonic() + 10
    while api.get("/faces", params={"camera": "cam-2"}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.get("/faces", params={"camera": "cam-2"}).json()["items"] == []


def test_interactive_docs_need_the_same_sign_in(server):
    anon = httpx.get(server.http_url + "/docs")
    assert anon.status_code == 401 and 'name="api_key"' in anon.text
    with httpx.Client(base_url=server.http_url, timeout=30) as c:
        assert c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui"}).status_code == 303
        for path in ("/docs", "/ui/docs"):
            page = c.get(path)
            assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
            assert "/faces/{face_id}/image" in page.text and 'class="try"' in page.text and "ErrorOut" in page.text
        assert c.get("/openapi.json").status_code == 200  # the document itself, with the session too
