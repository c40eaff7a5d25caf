"""Every Redis key the server uses, built from one prefix; nothing else spells a key.

Layout 2 (``p`` is the configured prefix, ``fs`` by default). Literal braces are Redis Cluster hash
tags: a face's record, tombstone and cached enhancement layer share a slot, and every time index is
split by shard and by 5 minutes of capture time, so no key is hot and each stays a compact
listpack/ziplist (see :mod:`analysis_server.records` for ``h``, ``b``, ``k``, ``P``):

==========================================  ==============  ===========================================
key                                         type            holds
==========================================  ==============  ===========================================
``p:r:{b}``                                 hash            records: field ``h`` (8-byte hash of the face
                                                            id) -> packed record or tombstone;
                                                            ``b`` = first two bytes of ``h`` (hex)
``p:enh:{b}:<face_id>``                     string          cached enhancement-layer payload (TTL)
``p:ix:{g:<k>:<m|u>:<P>}``                  sorted set      face ids by capture ms: every face, by shard
                                                            ``k`` and matched (m) or not (u)
``p:ix:{c:<camera>:<m|u>:<P>}``             sorted set      one camera's faces, matched or not
``p:ix:{i:<identity>:<P>}``                 sorted set      faces matched to one identity
``p:dir:{g}``, ``p:dir:{c:<camera>}``,      sorted set      the periods ``P`` in which those indexes
``p:dir:{i:<identity>}``                                    have entries (``{g:m}``, ``{g:u}``,
                                                            ``{c:<camera>:m}``...: matched or not only)
``p:cnt:{<P>}``                             hash            faces per period: ``a`` all, ``m`` matched,
                                                            ``c:<camera>``, ``i:<identity>``
``p:log:{log<k>}``                          stream          changes for the search index: ``a`` (stored)
                                                            or ``e`` (erased) -> ``h`` (+ capture ms)
``p:layout``                                hash            storage layout version and its constants
``p:ident:<identity_id>``                   hash            an enrolled identity (name, watchlist flag...)
``p:ident:<identity_id>:feat``              hash            its enrolled features, feature id -> float32 bytes
``p:identities``                            sorted set      identity ids by creation time
``p:gallery:version``                       string          bumped on every gallery change (index reload)
``p:cameras``                               hash            camera id -> JSON (last seen, agent version)
``p:cam:<camera_id>:drops``                 set             face ids whose texture the edge must still drop
``p:events``                                stream          observations, watchlist hits, deletions
``p:audit``                                 stream          who asked for which image or erased what
``p:cam:<camera_id>:owner``                 string          replica id holding the camera's stream (TTL,
                                                            refreshed while the stream is open)
``p:session:<sha256 of token>``             hash            a dashboard login: caller, CSRF token (TTL)
==========================================  ==============  ===========================================

Layout 1 (before 2026-11: a hash per face with a float copy of the feature, ``p:face:<id>``, and
one sorted set per index, ``p:faces``, ``p:cam:<id>:faces``, ``p:matched``,
``p:ident:<id>:faces``, tombstones ``p:erased:<id>``, enhancement layers ``p:enh:<id>``) is read
only to migrate it (:meth:`analysis_server.store.FaceStore.migrate_legacy`); its builders are the
``legacy_*`` ones.

Pub/sub channel: ``p:replica:<replica_id>``, requests to and replies from one server replica
(enhancement requests and texture drops for the cameras it holds).
"""

from __future__ import annotations

from dataclasses import dataclass


def _state(matched: bool | None) -> str:
    return "" if matched is None else (":m" if matched else ":u")


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix (tests give each test its own prefix)."""

    prefix: str = "fs"

    # -- layout 2 -------------------------------------------------------------------------------
    def records(self, bucket: int) -> str:
        return f"{self.prefix}:r:{{{bucket:04x}}}"

    def enhancement(self, bucket: int, face_id: str) -> str:
        return f"{self.prefix}:enh:{{{bucket:04x}}}:{face_id}"

    def all_index(self, shard: int, matched: bool, period: int) -> str:
        return f"{self.prefix}:ix:{{g:{shard}:{'m' if matched else 'u'}:{period}}}"

    def camera_index(self, camera_id: str, matched: bool, period: int) -> str:
        return f"{self.prefix}:ix:{{c:{camera_id}:{'m' if matched else 'u'}:{period}}}"

    def identity_index(self, identity_id: str, period: int) -> str:
        return f"{self.prefix}:ix:{{i:{identity_id}:{period}}}"

    def all_periods(self, matched: bool | None = None) -> str:
        """Periods with faces (``matched``: True only matched ones, False only unmatched ones)."""
        return f"{self.prefix}:dir:{{g{_state(matched)}}}"

    def camera_periods(self, camera_id: str, matched: bool | None = None) -> str:
        return f"{self.prefix}:dir:{{c:{camera_id}{_state(matched)}}}"

    def identity_periods(self, identity_id: str) -> str:
        return f"{self.prefix}:dir:{{i:{identity_id}}}"

    def counts(self, period: int) -> str:
        return f"{self.prefix}:cnt:{{{period}}}"

    def change_log(self, shard: int) -> str:
        return f"{self.prefix}:log:{{log{shard}}}"

    @property
    def layout(self) -> str:
        return f"{self.prefix}:layout"

    # -- layout 1 (read to migrate it) --------------------------------------------------------
    def legacy_face(self, face_id: str) -> str:
        return f"{self.prefix}:face:{face_id}"

    @property
    def legacy_faces(self) -> str:
        return f"{self.prefix}:faces"

    def legacy_camera_faces(self, camera_id: str) -> str:
        return f"{self.prefix}:cam:{camera_id}:faces"

    @property
    def legacy_matched(self) -> str:
        return f"{self.prefix}:matched"

    def legacy_identity_faces(self, identity_id: str) -> str:
        return f"{self.prefix}:ident:{identity_id}:faces"

    def legacy_enhancement(self, face_id: str) -> str:
        return f"{self.prefix}:enh:{face_id}"

    def legacy_tombstone(self, face_id: str) -> str:
        return f"{self.prefix}:erased:{face_id}"

    # -- the rest ---------------------------------------------------------------------------------
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
