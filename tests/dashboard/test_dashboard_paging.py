"""The dashboard's Search and Gallery page through every result and export it (CSV, JSON), over HTTP
against a real server, Redis and edge-side gRPC client."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import httpx
import pytest
from dashboard_testkit import login
from server_testkit import API_KEY, Edge, observation

pytestmark = pytest.mark.slow


def _pages(c: httpx.Client, url: str, **params) -> list[list[str]]:
    """Face ids of every page, following the Next page links."""
    pages = []
    page = c.get(url, params=params)
    while True:
        assert page.status_code == 200, page.text[:500]
        pages.append(re.findall(r'href="/ui/faces/([^"/]+)"', page.text))
        nxt = re.search(r'href="([^"]+)" id="next-page"', page.text)
        if not nxt:
            return pages
        page = c.get(nxt.group(1).replace("&amp;", "&"))


def test_search_and_gallery_page_through_everything_and_export_it(make_server, samples):
    server = make_server()
    server.call(server.services.history.ready.wait(), timeout=120)
    t = int(time.time() * 1000)
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    edge = Edge(server.grpc_target, "cam-2")
    try:
        edge.hello()
        ack = edge.send(*[observation(f"pg-{i:03d}", samples[i % len(samples)].base, camera_id="cam-2", t_ms=t - i)
                          for i in range(230)])
        assert len(ack.face_ids) == 230
    finally:
        edge.close()
    api = httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30)
    for i in range(105):  # two pages of identities
        api.post("/identities", json={"name": f"=Person {i:03d}", "watchlist": i % 2 == 0})
    ident = api.post("/identities", json={"name": person, "features": [{"feature": mine[0].feature.tolist()}]}).json()
    with login(server.http_url) as c:
        pages = _pages(c, "/ui/search", camera="cam-2")
        assert [len(p) for p in pages] == [100, 100, 30]
        assert [f for p in pages for f in p] == [f"pg-{i:03d}" for i in range(230)]  # newest first, none twice
        exported = c.get("/ui/search/export", params={"format": "csv", "camera": "cam-2"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["face_id"] for r in rows] == [f"pg-{i:03d}" for i in range(230)]
        assert {r["camera_id"] for r in rows} == {"cam-2"} and rows[0]["capture_time_ms"] == str(t)
        # a search by person: ranked by distance, paged by offset, exported whole
        found = _pages(c, "/ui/search", identity=ident["identity_id"])
        as_json = c.get("/ui/search/export", params={"format": "json", "identity": ident["identity_id"]}).json()
        assert [r["face_id"] for r in as_json["items"]] == [f for p in found for f in p] and not as_json["truncated"]
        distances = [r["distance"] for r in as_json["items"]]
        assert distances == sorted(distances) and all(d <= server.settings.match_threshold for d in distances)
        gallery = c.get("/ui/gallery").text
        assert gallery.count("data-identity-id=") >= 100 and 'id="next-page"' in gallery
        second = c.get("/ui/gallery", params={"offset": 100}).text
        assert 'id="next-page"' not in second and "Previous page" in second
        ids = c.get("/ui/gallery/export", params={"format": "csv"})
        table = list(csv.DictReader(io.StringIO(ids.text)))
        assert len(table) == 106 and {r["name"] for r in table} >= {"'=Person 000", person}  # no formula runs
        assert json.loads(c.get("/ui/gallery/export", params={"format": "json"}).text)["items"][0]["identity_id"]
        assert c.get("/ui/search/export", params={"format": "xml"}).status_code == 422
    audit = api.get("/audit").json()
    assert {"export_faces", "export_identities"} <= {e["action"] for e in audit}
    api.close()
