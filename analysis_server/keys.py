"""Every Redis key the server uses, built from one prefix; nothing else spells a key.

Layout (``p`` is the configured prefix, ``fs`` by default):

======================================  ==============  ===============================================
key                                     type            holds
======================================  ==============  ===============================================
``p:face:{face_id}``                    hash            one observation: metadata, base payload, decoded
                                                        feature, match; expires ``retention_s`` after capture
``p:faces``                             sorted set      every stored face id, scored by capture time (ms)
``p:cam:{camera_id}:faces``             sorted set      the camera's face ids by capture time
``p:matched``                           sorted set      face ids matched to an enrolled identity
``p:ident:{identity_id}:faces``         sorted set      face ids matched to one identity
``p:enh:{face_id}``                     string          cached enhancement-layer payload (TTL)
``p:ident:{identity_id}``               hash            an enrolled identity (name, watchlist flag...)
``p:ident:{identity_id}:feat``          hash            its enrolled features, feature id -> float32 bytes
``p:identities``                        sorted set      identity ids by creation time
``p:gallery:version``                   string          bumped on every gallery change (index reload)
``p:cameras``                           hash            camera id -> JSON (last seen, agent version)
``p:cam:{camera_id}:drops``             set             face ids whose texture the edge must still drop
``p:erased:{face_id}``                  string          tombstone of an erased face (a replay is not stored)
``p:events``                            stream          observations, watchlist hits, deletions
``p:audit``                             stream          who asked for which image or erased what
``p:cam:{camera_id}:owner``             string          replica id holding the camera's stream (TTL,
                                                        refreshed while the stream is open)
``p:session:{sha256 of token}``         hash            a dashboard login: caller, CSRF token (TTL)
======================================  ==============  ===============================================

Pub/sub channel: ``p:replica:{replica_id}``, requests to and replies from one server replica
(enhancement requests and texture drops for the cameras it holds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix (tests give each test its own prefix)."""

    prefix: str = "fs"

    def face(self, face_id: str) -> str:
        return f"{self.prefix}:face:{face_id}"

    @property
    def faces(self) -> str:
        return f"{self.prefix}:faces"

    def camera_faces(self, camera_id: str) -> str:
        return f"{self.prefix}:cam:{camera_id}:faces"

    @property
    def matched(self) -> str:
        return f"{self.prefix}:matched"

    def identity_faces(self, identity_id: str) -> str:
        return f"{self.prefix}:ident:{identity_id}:faces"

    def enhancement(self, face_id: str) -> str:
        return f"{self.prefix}:enh:{face_id}"

    def identity(self, identity_id: str) -> str:
        return f"{self.prefix}:ident:{identity_id}"

    def identity_features(self, identity_id: str) -> str:
        return f"{self.prefix}:ident:{identity_id}:feat"

    @property
    def identities(self) -> str:
        return f"{self.prefix}:identities"

    @property
    def gallery_version(self) -> str:
        return f"{self.prefix}:gallery:version"

    @property
    def cameras(self) -> str:
        return f"{self.prefix}:cameras"

    def pending_drops(self, camera_id: str) -> str:
        return f"{self.prefix}:cam:{camera_id}:drops"

    def tombstone(self, face_id: str) -> str:
        return f"{self.prefix}:erased:{face_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def camera_owner(self, camera_id: str) -> str:
        return f"{self.prefix}:cam:{camera_id}:owner"

    def replica_channel(self, replica_id: str) -> str:
        return f"{self.prefix}:replica:{replica_id}"

    def session(self, token_digest: str) -> str:
        return f"{self.prefix}:session:{token_digest}"

    def all_pattern(self) -> str:
        """``SCAN`` pattern matching every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"
