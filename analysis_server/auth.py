"""Credentials: REST API keys and per-camera gRPC tokens, kept only as SHA-256 digests.

Comparison is constant-time (``hmac.compare_digest`` on digests). A caller is named in the
audit log by the key's fingerprint (:func:`analysis_server.settings.fingerprint`), never by
the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
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

    def knows_camera(self, camera_id: str) -> bool:
        """Whether ``camera_id`` has a token of its own (so guessing it is worth counting)."""
        return camera_id in self._cameras and camera_id != ANY_CAMERA

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


def client_bucket(address: str) -> str:
    """What failures are counted against: an IPv4 address, or the /64 network of an IPv6 address
    (one host or site usually holds a whole /64, so counting single IPv6 addresses would let it
    rotate past any limit); IPv4-mapped IPv6 (``::ffff:1.2.3.4``, what a dual-stack socket reports
    for an IPv4 client) counts as the IPv4 address. Anything else (a Unix socket) as it is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureLimiter:
    """Counts wrong credentials per key (a client bucket, a camera id) and throttles a key that has
    ``limit`` failures within ``window_s``: for ``lockout_s`` its wrong attempts are answered "too
    many attempts" (HTTP 429, gRPC ``RESOURCE_EXHAUSTED``), each after ``delay_s`` (at most
    ``max_held`` held at once per key; beyond that, at once).

    Only wrong credentials are counted and throttled. A valid key or token is accepted before this
    is consulted, so nobody's failures (an attacker behind the same NAT or proxy, or one sending
    a victim's camera id) can lock a valid credential out. What stops guessing is the credential's
    length (see the README, "Lockout"); this makes guessing slow for a client that waits for its
    answers, and loud (logs, ``faceserver_auth_failures_total``).

    Counters live in this process's memory: each server replica counts on its own, and a restart
    forgets them. ``limit`` 0 turns the limiter off. At most ``max_keys`` keys are tracked (the
    oldest are forgotten first), so a flood of addresses cannot exhaust memory.
    """

    def __init__(self, limit: int, window_s: float, lockout_s: float, delay_s: float = 1.0, max_held: int = 4,
                 max_keys: int = 100_000, clock=time.monotonic):
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self.delay_s, self.max_held = delay_s, max_held
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}  # key -> (window start, failures in it)
        self._locked: dict[str, float] = {}  # key -> throttled until
        self._held: dict[str, int] = {}  # key -> attempts being delayed now

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` stays throttled (0: not throttled)."""
        until = self._locked.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._locked[key]
            return 0.0
        return left

    def failed(self, key: str) -> bool:
        """Count one wrong credential of ``key``; whether ``key`` is throttled now."""
        if self.limit <= 0:
            return False
        if self.retry_after(key) > 0:
            return True
        now = self._clock()
        start, n = self._failures.pop(key, (now, 0))
        if now - start > self.window_s:
            start, n = now, 0
        n += 1
        if n >= self.limit:
            self._locked[key] = now + self.lockout_s
            self._trim(self._locked, lambda until: until <= now)
            return True
        self._failures[key] = (start, n)  # re-inserted: the dict's order is the order of last failure
        self._trim(self._failures, lambda v: now - v[0] > self.window_s)
        return False

    async def hold(self, key: str) -> None:
        """Delay the answer to a throttled wrong attempt (``delay_s``), unless ``max_held`` already wait."""
        held = self._held.get(key, 0)
        if held >= self.max_held or self.delay_s <= 0:
            return
        self._held[key] = held + 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]

    def _trim(self, table: dict, expired) -> None:
        if len(table) <= self.max_keys:
            return
        for k in [k for k, v in table.items() if expired(v)]:
            del table[k]
        while len(table) > self.max_keys:
            del table[next(iter(table))]
