"""Helpers of the dashboard tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from server_testkit import API_KEY


@contextlib.contextmanager
def login(base_url: str, key: str = API_KEY) -> Iterator[httpx.Client]:
    """A client holding a dashboard session (as a browser would after the login form)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/ui/login", data={"api_key": key, "next": "/ui"})
        assert r.status_code == 303, r.text
        yield client
