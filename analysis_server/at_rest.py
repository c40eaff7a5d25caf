"""Encryption at rest of the biometric values in Redis: base layers, features, enhancement layers.

A feature can be inverted into a recognisable face (issue 6, "Privacy"), so with
``FACESERVER_STORAGE_KEY`` set (base64 of 32 random bytes) :class:`FaceStore` seals each of
these values with AES-256-GCM before it leaves the process. A sealed value describes itself::

    0   4 bytes   b"\\xfeFS1"       marker and format version
    4   4 bytes   key id           first bytes of SHA-256 over the key (which key sealed it)
    8   12 bytes  nonce            random per value
    20  ...       ciphertext and 16-byte GCM tag; associated data: the Redis key and field name

so records written without a key stay readable after one is configured, and a value copied to
another face or field fails its tag. No plaintext value can start with the marker: a base layer
starts with 0xB_, an enhancement layer with 0xE_, and a feature's first float32 would have to be
about 3380 (features are unit-scale). Matching still needs the features in memory: the gallery
index and searches read them decrypted; only Redis (and its RDB/AOF files) holds ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from analysis_server.errors import ServerError

MARKER = b"\xfeFS1"
KEY_BYTES = 32
_ID_BYTES, _NONCE_BYTES = 4, 12
_HEAD = len(MARKER) + _ID_BYTES + _NONCE_BYTES


class StorageKeyError(ServerError):
    """A stored value is sealed and cannot be opened: no key, another key, or a failed tag.

    Nothing is changed in Redis when this is raised: configure the key that sealed the value.
    """


def parse_key(text: str) -> bytes:
    """The 32 key bytes of ``FACESERVER_STORAGE_KEY`` (base64); ``ValueError`` naming the problem."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("FACESERVER_STORAGE_KEY is not base64 (make one with `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"FACESERVER_STORAGE_KEY decodes to {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                         "(make one with `openssl rand -base64 32`)")
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"facecodec storage key\0" + key).digest()[:_ID_BYTES]


class Sealer:
    """Seals and opens values with one key; :meth:`open` passes unsealed (legacy) values through."""

    def __init__(self, key: bytes | None):
        if key is not None and len(key) != KEY_BYTES:
            raise ValueError(f"a storage key has {KEY_BYTES} bytes, not {len(key)}")
        self.enabled = key is not None
        if key is not None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(key)
            self._id = key_id(key)
            self._prefix = MARKER + self._id

    def seal(self, value: bytes, context: bytes) -> bytes:
        """``value`` sealed for ``context`` (where it is stored); itself when no key is set."""
        if not self.enabled:
            return value
        nonce = os.urandom(_NONCE_BYTES)
        return self._prefix + nonce + self._aead.encrypt(nonce, value, context)

    def open(self, value: bytes, context: bytes) -> bytes:
        """The plaintext of a value read from ``context``; :class:`StorageKeyError` if it cannot be opened."""
        if value[:4] != MARKER:
            return value
        if not self.enabled:
            raise StorageKeyError(f"{context.decode(errors='replace')} is encrypted at rest and this server has no "
                                  "storage key: set FACESERVER_STORAGE_KEY to the key that wrote it")
        if value[4:8] != self._id:
            raise StorageKeyError(f"{context.decode(errors='replace')} was encrypted with another storage key "
                                  f"(key id {value[4:8].hex()}, this server's is {self._id.hex()}): set "
                                  "FACESERVER_STORAGE_KEY to the key that wrote it")
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(value[8:_HEAD], value[_HEAD:], context)
        except InvalidTag:
            raise StorageKeyError(f"{context.decode(errors='replace')} does not authenticate under the storage key: "
                                  "it was altered or copied from another record") from None
