"""The dashboard's cookie works only from the dashboard's own pages (``Sec-Fetch-Site``).

The attack (issue 15, item 5): SameSite treats every port of a host as the same site, so an
``<img src="http://host:8080/faces/<id>/image?layer=full">`` on a page served from another port
of the same host (another service, a dev server) made the operator's browser send the session
cookie: the server asked the edge for the full-fidelity face and wrote "the operator looked at
this face" in the audit log. The CSRF token protected only requests that change something.

Now every request that authenticates with the cookie must say ``Sec-Fetch-Site: same-origin``
(or ``none``: a typed address or a bookmark; or send no such header: not a browser, or a very old
one). Real server, real HTTP, a real login.
"""

from __future__ import annotations

import re

import httpx
import pytest
from server_testkit import API_KEY, Edge, observation

pytestmark = pytest.mark.slow

SAME_SITE = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
CROSS_SITE = {"Sec-Fetch-Site": "cross-site"}
OWN_PAGE = {"Sec-Fetch-Site": "same-origin"}


def test_a_cookie_request_from_another_origin_is_refused_even_a_get(make_server, samples):
    server = make_server()
    s = samples[0]
    edge = Edge(server.grpc_target, "cam-1", textures={"fs-1": (s.chip, s.base)})
    try:
        edge.hello()
        edge.send(observation("fs-1", s.base))
        with httpx.Client(base_url=server.http_url, timeout=30) as c:
            assert c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui"}, headers=OWN_PAGE).status_code == 303
            for headers in (SAME_SITE, CROSS_SITE):
                r = c.get("/faces/fs-1/image", params={"layer": "full"}, headers=headers)
                assert r.status_code == 403 and "Sec-Fetch-Site" in r.json()["detail"]
            assert edge.requests.empty()  # the edge was never asked for the face
            page = c.get("/ui", headers=OWN_PAGE).text
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
            r = c.delete("/faces/fs-1", headers={**SAME_SITE, "X-CSRF-Token": csrf})
            assert r.status_code == 403  # even with the CSRF token (a page on another port may have read it)
            assert c.get("/ui/faces/fs-1", headers=SAME_SITE).status_code == 401  # the login form, not the face
            audit = c.get("/audit", headers=OWN_PAGE).json()
            assert not [e for e in audit if e["action"] == "image"]
            # From the dashboard itself (or a client that sends no Sec-Fetch-Site) it works.
            assert c.get("/faces/fs-1/image", params={"layer": "full"}, headers=OWN_PAGE).status_code == 200
            assert c.get("/faces/fs-1", headers={"Sec-Fetch-Site": "none"}).status_code == 200
            assert c.get("/faces/fs-1").status_code == 200
            # A login form posted from another origin does not log the browser in.
            assert c.post("/ui/login", data={"api_key": API_KEY, "next": "/ui"}, headers=SAME_SITE).status_code == 403
        with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY, **SAME_SITE}, timeout=30) as api:
            assert api.get("/faces/fs-1").status_code == 200  # API keys are not ambient: no origin check
    finally:
        edge.close()
