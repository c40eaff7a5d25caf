"""Encryption at rest of what the edge keeps: face crops and base layers (texture store) and the
serialised observations waiting for an ack (spool), sealed with ``EDGE_STORAGE_KEY``.

AES-256-GCM, one random nonce per value, the face id and the column as associated data (a value
copied to another face or column does not open). A sealed value describes itself::

    0   4 bytes   b"\\xfeFE1"       marker and format version
    4   4 bytes   key id           first bytes of SHA-256 over the key (which key sealed it)
    8   12 bytes  nonce
    20  ...       ciphertext and 16-byte GCM tag

so rows written before a key was configured are read as they are. No plaintext value starts with
the marker: a PNG starts with 0x89, a base layer with 0xB_, a serialised observation with a
protobuf tag (0x0A). The same format as the analysis server's ``analysis_server.at_rest``, with
its own marker: the two services share no code but the codec library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from edge_agent.errors import StoreError

MARKER = b"\xfeFE1"
KEY_BYTES = 32
_ID_BYTES, _NONCE_BYTES = 4, 12
_HEAD = len(MARKER) + _ID_BYTES + _NONCE_BYTES


def parse_key(text: str) -> bytes:
    """The 32 bytes of ``EDGE_STORAGE_KEY`` (base64); ``ValueError`` naming the problem, never the key."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("EDGE_STORAGE_KEY is not base64 (make one with `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"EDGE_STORAGE_KEY decodes to {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                         "(make one with `openssl rand -base64 32`)")
    return key


class Sealer:
    """Seals and opens values with one key (or none: values pass through, sealed ones cannot be read)."""

    def __init__(self, key: bytes | None = None):
        self.enabled = key is not None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            if len(key) != KEY_BYTES:
                raise ValueError(f"a storage key has {KEY_BYTES} bytes, not {len(key)}")
            self._aead = AESGCM(key)
            self._id = hashlib.sha256(b"facecodec edge storage key\0" + key).digest()[:_ID_BYTES]

    def seal(self, value: bytes, context: str) -> bytes:
        if not self.enabled:
            return value
        nonce = os.urandom(_NONCE_BYTES)
        return MARKER + self._id + nonce + self._aead.encrypt(nonce, value, context.encode())

    def open(self, value: bytes, context: str) -> bytes:
        """The plaintext of ``value``; :class:`StoreError` naming the setting when it cannot be opened."""
        if value[:4] != MARKER:
            return value
        if not self.enabled:
            raise StoreError(f"{context} is encrypted at rest and this agent has no storage key: set "
                             "EDGE_STORAGE_KEY to the key that wrote it")
        if value[4:8] != self._id:
            raise StoreError(f"{context} was encrypted with another storage key: set EDGE_STORAGE_KEY to the key "
                             "that wrote it")
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(value[8:_HEAD], value[_HEAD:], context.encode())
        except InvalidTag:
            raise StoreError(f"{context} does not authenticate under the storage key (altered, or copied from "
                             "another row)") from None
