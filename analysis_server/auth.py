"""Credentials: REST API keys and per-camera gRPC tokens, kept only as SHA-256 digests.

Comparison is constant-time (``hmac.compare_digest`` on digests). A caller is named in the
audit log by the key's fingerprint (:func:`analysis_server.settings.fingerprint`), never by
the key.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import unquote

from analysis_server.settings import ANY_CAMERA, fingerprint


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Credentials:
    """Checks REST keys and camera tokens."""

    def __init__(self, api_keys: list[str], camera_tokens: dict[str, str]):
        self._keys = [(_digest(k), fingerprint(k)) for k in api_keys]
        self._cameras = {c: _digest(t) for c, t in camera_tokens.items()}

    def api_caller(self, presented: str | None) -> str | None:
        """The caller's name (``key:<fingerprint>``) if ``presented`` is a valid API key, else ``None``."""
        if not presented:
            return None
        d = _digest(presented)
        found = None
        for digest, name in self._keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(d, digest):
                found = f"key:{name}"
        return found

    def camera_allowed(self, camera_id: str | None, token: str | None) -> bool:
        """Whether ``token`` admits ``camera_id``: its own token, or the ``"*"`` token."""
        if not camera_id or not token:
            return False
        d = _digest(token)
        own = self._cameras.get(camera_id)
        wildcard = self._cameras.get(ANY_CAMERA)
        ok_own = own is not None and hmac.compare_digest(d, own)
        ok_any = wildcard is not None and hmac.compare_digest(d, wildcard)
        return ok_own or ok_any


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def peer_address(peer: str | None) -> str:
    """The client address of a gRPC peer string (``ipv4:1.2.3.4:5678`` -> ``1.2.3.4``), port removed."""
    if not peer:
        return "unknown"
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return unquote(host).strip("[]")
    return peer  # unix sockets and the like: the whole string


class FailureLimiter:
    """Locks out a client address after ``limit`` authentication failures within ``window_s``.

    A locked address is refused (HTTP 429, gRPC ``RESOURCE_EXHAUSTED``) for ``lockout_s``, valid
    credentials included, so guessing cannot go on behind the lock. Counters live in this
    process's memory: each server replica counts on its own, and a restart forgets them.
    ``limit`` 0 turns the limiter off. At most ``max_addresses`` addresses are tracked (the
    oldest are forgotten first), so a flood of addresses cannot exhaust memory.
    """

    def __init__(self, limit: int, window_s: float, lockout_s: float, max_addresses: int = 100_000,
                 clock=time.monotonic):
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window start, failures in it)
        self._locked: dict[str, float] = {}  # address -> locked until

    @property
    def any_locked(self) -> bool:
        """Whether some address may be locked now (cheap: lets callers skip per-call checks)."""
        return bool(self._locked)

    def retry_after(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0: not locked)."""
        until = self._locked.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._locked[address]
            return 0.0
        return left

    def failed(self, address: str) -> bool:
        """Count one failure of ``address``; True when this failure locks it out."""
        if self.limit <= 0:
            return False
        now = self._clock()
        start, n = self._failures.pop(address, (now, 0))
        if now - start > self.window_s:
            start, n = now, 0
        n += 1
        if n >= self.limit:
            self._locked[address] = now + self.lockout_s
            self._trim(self._locked, now, lambda until: until <= now)
            return True
        self._failures[address] = (start, n)  # re-inserted: the dict's order is the order of last failure
        self._trim(self._failures, now, lambda v: now - v[0] > self.window_s)
        return False

    def _trim(self, table: dict, now: float, expired) -> None:
        if len(table) <= self.max_addresses:
            return
        for k in [k for k, v in table.items() if expired(v)]:
            del table[k]
        while len(table) > self.max_addresses:
            del table[next(iter(table))]
