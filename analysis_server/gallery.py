"""Enrolled identities: stored in Redis, searched through an in-memory :class:`GalleryIndex`.

Matching is on decoded base-layer features with Euclidean distance, the metric of
:mod:`facecodec.verification`; an identity may hold several enrolled features and its distance
to a probe is the smallest of them. The decision threshold (``match_threshold``) is the one
calibrated on LFW (see the README).

Every change bumps ``gallery:version`` in Redis; a server whose index is older than that
(another replica changed the gallery) reloads it, checked at most once a second.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis

from analysis_server import features
from analysis_server.at_rest import Sealer
from analysis_server.errors import InvalidInput, NotFound
from analysis_server.gallery_index import GalleryIndex
from analysis_server.keys import Keys
from analysis_server.redis_batch import is_cluster
from analysis_server.store import Match, now_ms

log = logging.getLogger(__name__)

MAX_FEATURES_PER_IDENTITY = 64


@dataclass
class Identity:
    """An enrolled person (no feature values: those stay server-side)."""

    identity_id: str
    name: str
    watchlist: bool
    notes: str
    created_ms: int
    updated_ms: int
    feature_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_hash(cls, identity_id: str, h: dict[bytes, bytes], feature_ids: list[str]) -> Identity:
        s = {k.decode(): v.decode() for k, v in h.items()}
        return cls(identity_id, s.get("name", ""), s.get("watchlist") == "1", s.get("notes", ""),
                   int(s.get("created", 0)), int(s.get("updated", 0)), sorted(feature_ids))


@dataclass(frozen=True)
class Candidate:
    identity_id: str
    distance: float


def check_feature(feature, dim: int | None = None) -> np.ndarray:
    """A usable probe or enrolment feature (``dim`` values: the matched backend's by default), or
    :class:`InvalidInput`."""
    dim = features.dim() if dim is None else dim
    f = np.asarray(feature, dtype=np.float32)
    if f.shape != (dim,):
        raise InvalidInput(f"a feature has {dim} values, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise InvalidInput("the feature has non-finite values")
    if not 1e-3 < float(np.linalg.norm(f)) < 100:
        raise InvalidInput("the feature's norm is implausible for a face descriptor")
    return f


def feature_context(identity_id: str, feature_id: str) -> bytes:
    """What a sealed enrolled feature is bound to (GCM associated data)."""
    return f"ident:{identity_id}:feat:{feature_id}".encode()


class Gallery:
    """Identity CRUD in Redis plus 1:N and 1:1 matching against the in-memory index."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, threshold: float, index: GalleryIndex,
                 refresh_interval_s: float = 1.0, sealer: Sealer | None = None):
        self.redis = redis
        self.sealer = sealer or Sealer(None)  # enrolled features are biometric data too: sealed at rest
        self.keys = keys
        self.threshold = threshold
        self.index = index
        self.refresh_interval_s = refresh_interval_s
        self._meta: dict[str, tuple[str, bool]] = {}  # identity id -> (name, watchlist)
        self._version = -1
        self._checked = 0.0
        self._lock = asyncio.Lock()

    # -- loading -----------------------------------------------------------------------------
    async def load(self) -> None:
        """(Re)build the index from Redis."""
        async with self._lock:
            version = int(await self.redis.get(self.keys.gallery_version) or 0)
            ids = [i.decode() for i in await self.redis.zrange(self.keys.identities, 0, -1)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(self.keys.identity(i), ["name", "watchlist"])
                    pipe.hgetall(self.keys.identity_features(i))
                raw = await pipe.execute()
            meta, keys, vecs = {}, [], []
            for i, h, feats in zip(ids, raw[0::2], raw[1::2]):
                if h[0] is None:
                    continue
                meta[i] = (h[0].decode(), h[1] == b"1")
                for fid, v in feats.items():
                    keys.append(f"{i}/{fid.decode()}")
                    vecs.append(np.frombuffer(self.sealer.open(v, feature_context(i, fid.decode())), np.float32))
            index = GalleryIndex(self.index.dim, self.index.exact_max, self.index.nlist, self.index.nprobe)
            if keys:
                await asyncio.to_thread(index.add, keys, np.stack(vecs))
            self.index, self._meta, self._version = index, meta, version
            self._checked = time.monotonic()
            log.info("gallery loaded: %d identities, %d features, %s index", len(meta), len(index), index.kind)

    async def refresh_if_stale(self) -> None:
        if time.monotonic() - self._checked < self.refresh_interval_s:
            return
        self._checked = time.monotonic()
        version = int(await self.redis.get(self.keys.gallery_version) or 0)
        if version != self._version:
            await self.load()

    async def _bump(self) -> None:
        v = await self.redis.incr(self.keys.gallery_version)
        if v == self._version + 1:
            self._version = v
        else:  # someone else changed the gallery too: next refresh reloads
            self._checked = 0.0

    # -- CRUD --------------------------------------------------------------------------------
    async def create(self, name: str, watchlist: bool = False, notes: str = "") -> Identity:
        identity_id = secrets.token_hex(8)
        t = now_ms()
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.hset(self.keys.identity(identity_id),
                      mapping={"name": name, "watchlist": int(watchlist), "notes": notes, "created": t, "updated": t})
            pipe.zadd(self.keys.identities, {identity_id: t})
            await pipe.execute()
        self._meta[identity_id] = (name, watchlist)
        await self._bump()
        return Identity(identity_id, name, watchlist, notes, t, t, [])

    async def get(self, identity_id: str) -> Identity:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.identity(identity_id))
            pipe.hkeys(self.keys.identity_features(identity_id))
            h, fids = await pipe.execute()
        if not h:
            raise NotFound(f"no identity {identity_id!r}")
        return Identity.from_hash(identity_id, h, [f.decode() for f in fids])

    async def list(self, offset: int = 0, limit: int = 100) -> tuple[list[Identity], int]:
        total = await self.redis.zcard(self.keys.identities)
        ids = [i.decode() for i in await self.redis.zrange(self.keys.identities, offset, offset + limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self.keys.identity(i))
                pipe.hkeys(self.keys.identity_features(i))
            raw = await pipe.execute()
        out = [Identity.from_hash(i, h, [f.decode() for f in fids]) for i, h, fids in zip(ids, raw[0::2], raw[1::2]) if h]
        return out, total

    async def update(self, identity_id: str, name: str | None = None, watchlist: bool | None = None,
                     notes: str | None = None) -> Identity:
        cur = await self.get(identity_id)
        changes: dict[str, str | int] = {"updated": now_ms()}
        if name is not None:
            changes["name"] = name
        if watchlist is not None:
            changes["watchlist"] = int(watchlist)
        if notes is not None:
            changes["notes"] = notes
        await self.redis.hset(self.keys.identity(identity_id), mapping=changes)
        self._meta[identity_id] = (name if name is not None else cur.name,
                                   watchlist if watchlist is not None else cur.watchlist)
        await self._bump()
        return await self.get(identity_id)

    async def add_feature(self, identity_id: str, feature) -> str:
        f = check_feature(feature, self.index.dim)
        ident = await self.get(identity_id)
        if len(ident.feature_ids) >= MAX_FEATURES_PER_IDENTITY:
            raise InvalidInput(f"identity {identity_id} already holds {MAX_FEATURES_PER_IDENTITY} features")
        feature_id = secrets.token_hex(4)
        async with self.redis.pipeline(transaction=not is_cluster(self.redis)) as pipe:
            pipe.hset(self.keys.identity_features(identity_id), feature_id,
                      self.sealer.seal(f.tobytes(), feature_context(identity_id, feature_id)))
            pipe.hset(self.keys.identity(identity_id), "updated", now_ms())
            await pipe.execute()
        await asyncio.to_thread(self.index.add, [f"{identity_id}/{feature_id}"], f[None])
        await self._bump()
        return feature_id

    async def remove_feature(self, identity_id: str, feature_id: str) -> None:
        if not await self.redis.hdel(self.keys.identity_features(identity_id), feature_id):
            raise NotFound(f"identity {identity_id!r} has no feature {feature_id!r}")
        await asyncio.to_thread(self.index.remove, [f"{identity_id}/{feature_id}"])
        await self._bump()

    async def delete(self, identity_id: str) -> None:
        """Erase the identity and its features (its matched faces are the store's: ``FaceStore.identity_face_ids``)."""
        ident = await self.get(identity_id)
        await self.redis.delete(self.keys.identity(identity_id), self.keys.identity_features(identity_id))
        await self.redis.zrem(self.keys.identities, identity_id)
        await asyncio.to_thread(self.index.remove, [f"{identity_id}/{f}" for f in ident.feature_ids])
        self._meta.pop(identity_id, None)
        await self._bump()

    async def features(self, identity_id: str) -> np.ndarray:
        raw = await self.redis.hgetall(self.keys.identity_features(identity_id))
        if not raw:
            await self.get(identity_id)  # NotFound when the identity itself is missing
            raise InvalidInput(f"identity {identity_id!r} has no enrolled feature yet")
        return np.stack([np.frombuffer(self.sealer.open(v, feature_context(identity_id, fid.decode())), np.float32)
                         for fid, v in raw.items()])

    def name(self, identity_id: str) -> str | None:
        m = self._meta.get(identity_id)
        return m[0] if m else None

    @property
    def identity_count(self) -> int:
        return len(self._meta)

    @property
    def identity_ids(self) -> list[str]:
        return list(self._meta)

    # -- matching ----------------------------------------------------------------------------
    def identify(self, probes: np.ndarray, k: int = 5) -> list[list[Candidate]]:
        """The ``k`` nearest identities of each probe row (best feature per identity), nearest first."""
        rows = self.index.search(probes, k * 4)
        out = []
        for hits in rows:
            best: dict[str, float] = {}
            for h in hits:
                ident = h.key.split("/", 1)[0]
                if ident not in best or h.distance < best[ident]:
                    best[ident] = h.distance
            out.append([Candidate(i, d) for i, d in sorted(best.items(), key=lambda kv: kv[1])[:k]])
        return out

    def match_batch(self, features: np.ndarray) -> list[Match | None]:
        """At ingest: each feature's identity when within the threshold, with its watchlist flag."""
        if len(self.index) == 0 or len(features) == 0:
            return [None] * len(features)
        out: list[Match | None] = []
        for hits in self.index.search(features, 1):
            if hits and hits[0].distance <= self.threshold:
                ident = hits[0].key.split("/", 1)[0]
                meta = self._meta.get(ident)
                out.append(Match(ident, hits[0].distance, bool(meta and meta[1])) if meta else None)
            else:
                out.append(None)
        return out
