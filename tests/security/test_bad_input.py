"""Bad REST input gets a clear 4xx, never a 5xx: oversized bodies, wrong content types, odd ids, non-images."""

from __future__ import annotations

import io
import json
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from server_testkit import API_KEY

pytestmark = pytest.mark.slow
MAX_UPLOAD = 4096


@pytest.fixture
def server(make_server):
    return make_server(max_upload_bytes=MAX_UPLOAD, max_upload_pixels=300 * 300, auth_fail_limit=0)


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def identity(api) -> str:
    return api.post("/identities", json={"name": "someone"}).raise_for_status().json()["identity_id"]


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG claiming ``width`` x ``height`` pixels, with almost no pixel data (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_bodies_over_the_upload_limit_get_413_before_they_are_read(api, identity):
    big = json.dumps({"name": "x" * (MAX_UPLOAD + 70_000)})
    r = api.post("/identities", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while read
        yield b'--zzz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 8192

    r = api.post(f"/identities/{identity}/images", content=chunks(),
                 headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413
    r = api.post(f"/identities/{identity}/images", files={"image": ("big.png", b"\x89PNG" + bytes(MAX_UPLOAD))})
    assert r.status_code == 413 and f"larger than {MAX_UPLOAD} bytes" in r.json()["detail"]
    assert api.get("/stats").status_code == 200  # the server is fine afterwards


def test_wrong_content_types_get_415_or_422(api, identity):
    probe = json.dumps({"probe": {"feature": [0.0] * 128}})
    for ctype in ("text/plain", "application/xml", "image/png", "application/octet-stream"):
        r = api.post("/search", content=probe, headers={"Content-Type": ctype})
        assert r.status_code == 415 and "application/json" in r.json()["detail"], ctype
    assert api.post("/search", content=probe).status_code == 415  # no content type at all
    r = api.post("/search", files={"probe": ("p.json", probe.encode())})  # a form where JSON is expected
    assert r.status_code == 422
    r = api.post(f"/identities/{identity}/images", json={"image": "not a file"})  # JSON where a form is expected
    assert r.status_code == 422
    assert api.post("/search", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 422


WEIRD_IDS = ["..%2f..%2fetc%2fpasswd", "..%2F..%2F", "%2e%2e", "%2e%2e%2f%2e%2e", "a%00b", "%00", "a" * 10_000, "%ff%fe",
             "id%0d%0aSet-Cookie:x=1", "%c0%ae%c0%ae", "a%20b", "-leading-dash", "%E2%80%AE"]


@pytest.mark.parametrize("path", ["/faces/{}", "/faces/{}/image", "/identities/{}", "/identities/{}/features/{}",
                                  "/ui/faces/{}"])
def test_weird_ids_in_paths_get_404_or_422_never_5xx(api, path):
    for weird in WEIRD_IDS:
        for method in ("GET", "DELETE"):
            r = api.request(method, path.replace("{}", weird))
            assert r.status_code in (404, 405, 422) or (path.startswith("/ui") and r.status_code == 401), \
                (method, path, weird[:40], r.status_code)


def test_weird_ids_in_query_parameters_get_422(api):
    for weird in ("../../etc", "a\x00b", "a" * 10_000):
        assert api.get("/faces", params={"camera": weird}).status_code == 422
        assert api.get("/audit", params={"face_id": weird}).status_code == 422
    assert api.get("/faces", params={"offset": 10**30}).status_code == 422  # once a Redis error (500)
    assert api.get("/identities", params={"offset": 2**70}).status_code == 422
    assert api.get("/faces", params={"since_ms": 10**30}).status_code == 422


def test_event_ids_beyond_what_redis_takes_get_422_not_500(api):
    huge = "06338894501666967372242893305972524-91220171134"  # once a Redis error (500), found by bench.api_fuzz
    for after in (huge, "18446744073709551616-0", "1-18446744073709551616"):
        assert api.get("/events", params={"after": after}).status_code == 422
        assert api.get("/events/live", params={"after": after}).status_code == 422
    assert api.get("/events", params={"after": "18446744073709551615-0"}).status_code == 200
    with api.stream("GET", "/events/live", headers={"Last-Event-ID": huge}) as r:  # a bad header is ignored
        assert r.status_code == 200 and next(r.iter_bytes()).startswith(b"retry:")


@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", b"these are not pixels", "not a readable image"),
    ("empty.png", b"", "not a readable image"),
    ("truncated.png", png(64, 64)[:60], "not a readable image"),
    ("script.png", b"<?php system($_GET['c']); ?>", "not a readable image"),
    ("tiny.png", png(16, 16), "too small to hold a face"),  # once a ValueError inside MTCNN (500)
    ("bomb.png", png_header_only(30_000, 30_000), "more than"),
    ("large.png", png(400, 400), "more than"),
    ("grey.png", png(64, 64), "no face"),
])
def test_uploads_that_are_not_usable_images_get_422_with_a_clear_message(api, identity, name, data, message):
    r = api.post(f"/identities/{identity}/images", files={"image": (name, data, "image/png")})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
