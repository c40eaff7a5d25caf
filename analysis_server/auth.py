"""Credentials: REST API keys and per-camera gRPC tokens, kept only as SHA-256 digests.

Comparison is constant-time (``hmac.compare_digest`` on digests). A caller is named in the
audit log by the key's fingerprint (:func:`analysis_server.settings.fingerprint`), never by
the key.
"""

from __future__ import annotations

import hashlib
import hmac

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
