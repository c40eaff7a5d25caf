"""Dashboard logins: a session bound to an API key, held by the browser in an HttpOnly cookie.

The operator types an API key once into the login form; the server checks it like any REST
key and answers with a random session token in the cookie ``fs_session`` (HttpOnly,
SameSite=Strict, ``Secure`` when configured). Redis keeps only the token's SHA-256, with the
caller's audit name (``key:<fingerprint>``, the same as the key itself gets) and a CSRF token,
for ``session_ttl_s``; any replica can check it. A session dies with logout, with its TTL, or
when its key is no longer configured. Requests that change something (any method but GET, HEAD
and OPTIONS) made with the cookie must carry the CSRF token in ``X-CSRF-Token``, which the
dashboard's pages hold and a page on another site cannot read.

Every request made with the cookie, GETs included, must also come from the dashboard itself:
SameSite treats every port of a host as one site, so an ``<img>`` on another port of the same
host sent the cookie with a ``layer=full`` request (which asks the edge for the face and writes
the audit log). Browsers say where a request comes from in ``Sec-Fetch-Site``; the cookie counts
only with ``same-origin`` or ``none`` (the operator typed the address or used a bookmark), or
without the header (a browser too old to send it, or not a browser).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from analysis_server.keys import Keys
from analysis_server.settings import fingerprint

COOKIE = "fs_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    caller: str
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Create, check and end dashboard sessions (Redis hashes with a TTL)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_s: int, api_keys: list[str]):
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._callers = {f"key:{fingerprint(k)}" for k in api_keys}

    async def create(self, caller: str) -> tuple[str, Session]:
        """A new session for an authenticated caller: (cookie token, session)."""
        token = secrets.token_urlsafe(32)
        session = Session(caller, secrets.token_urlsafe(24))
        await self.redis.hset(self.keys.session(_digest(token)), mapping={"caller": caller, "csrf": session.csrf})
        await self.redis.expire(self.keys.session(_digest(token)), self.ttl_s)
        return token, session

    async def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 128:
            return None
        raw = await self.redis.hmget(self.keys.session(_digest(token)), ["caller", "csrf"])
        if raw[0] is None or raw[1] is None:
            return None
        caller = raw[0].decode()
        if caller not in self._callers:  # its API key was removed from the configuration
            return None
        return Session(caller, raw[1].decode())

    async def delete(self, token: str | None) -> None:
        if token and len(token) <= 128:
            await self.redis.delete(self.keys.session(_digest(token)))


FETCH_SITES_OK = frozenset({"same-origin", "none"})


def fetch_site_ok(headers) -> bool:
    """Whether a request's ``Sec-Fetch-Site`` lets it use the dashboard's cookie (see the module doc)."""
    site = headers.get("sec-fetch-site")
    return site is None or site.strip().lower() in FETCH_SITES_OK


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), presented.encode())
