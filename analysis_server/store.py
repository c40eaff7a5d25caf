"""Face records, the per-camera time index, the events stream, enhancement layers and the audit log, in Redis.

Writes from the streams go through one Lua script call per batch (one round trip): for each
face the script stores the record only if neither it nor its erasure tombstone exists, so a
replayed observation is acknowledged and not stored twice, and an erased face is never brought
back by an edge that replays it. Face records expire ``retention_s`` after capture (``PEXPIREAT``);
the time indexes are trimmed by :meth:`FaceStore.sweep`, and readers skip ids whose record has
already expired.

A face hash holds ``camera``, ``t`` (capture ms), ``identity``, ``distance`` (the ingest match),
``base`` (the base-layer payload), ``feat`` (the decoded feature, float32 bytes) and ``meta``
(JSON: box, quality, track, backend, model, step, received time). With a storage key
(``FACESERVER_STORAGE_KEY``) ``base``, ``feat`` and cached enhancement layers are sealed with
AES-256-GCM (:mod:`analysis_server.at_rest`); reads open them, and read unsealed ones as they are.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from analysis_server.at_rest import Sealer
from analysis_server.keys import Keys
from analysis_server.validation import Observation

log = logging.getLogger(__name__)

STORED, DUPLICATE, ERASED = 1, 0, 2
SWEEP_CHUNK = 2000  # expired face ids deleted per round trip

# One call stores a batch. KEYS: all faces, events, matched, then per face: face, tombstone, camera
# faces, identity faces. ARGV: events maxlen, retention ms, then per face: face id, capture ms,
# identity ("" = none), watchlist flag, distance, camera id, base payload, feature bytes, meta (JSON).
# Returns one digit per face (a string): 1 (stored), 0 (already stored) or 2 (erased: tombstone). The script writes the
# indexed fields from ARGV itself, so each face costs few arguments (9: the "9 * i" below).
_STORE_BATCH = """
local out = {}
local retention = tonumber(ARGV[2])
for i = 0, (#KEYS - 3) / 4 - 1 do
  local k, a = 4 + 4 * i, 3 + 9 * i
  local face, id, t, ident, dist, cam = KEYS[k], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 4], ARGV[a + 5]
  if redis.call('EXISTS', KEYS[k + 1], face) > 0 then
    out[i + 1] = redis.call('EXISTS', KEYS[k + 1]) == 1 and 2 or 0
  else
    redis.call('HSET', face, 'camera', cam, 't', t, 'identity', ident, 'distance', dist,
               'base', ARGV[a + 6], 'feat', ARGV[a + 7], 'meta', ARGV[a + 8])
    redis.call('PEXPIREAT', face, string.format('%d', tonumber(t) + retention))
    redis.call('ZADD', KEYS[1], t, id)
    redis.call('ZADD', KEYS[k + 2], t, id)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', 'observation', 'face_id', id,
               'camera_id', cam, 'capture_time_ms', t, 'identity_id', ident, 'distance', dist)
    if ident ~= '' then
      redis.call('ZADD', KEYS[3], t, id)
      redis.call('ZADD', KEYS[k + 3], t, id)
      if ARGV[a + 3] == '1' then
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'type', 'watchlist_hit', 'face_id', id,
                   'camera_id', cam, 'capture_time_ms', t, 'identity_id', ident, 'distance', dist)
      end
    end
    out[i + 1] = 1
  end
end
return table.concat(out)
"""


# An after-the-fact match (FaceStore.assign_match). KEYS: face, matched, new identity's faces, old identity's
# faces. ARGV: identity id, distance, capture ms, face id.
_ASSIGN_MATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'identity', ARGV[1], 'distance', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if KEYS[4] ~= KEYS[3] then redis.call('ZREM', KEYS[4], ARGV[4]) end
return 1
"""


def now_ms() -> int:
    return int(time.time() * 1000)


_BULK = b"$%d\r\n%b\r\n"  # a bulk string of the wire protocol (RESP): its length, its bytes
_FOUR, _NINE = _BULK * 4, _BULK * 9  # a face's keys, a face's arguments (see _STORE_BATCH)


def _bulks(*values: str) -> bytes:
    """Strings as RESP bulk strings (UTF-8), concatenated."""
    return b"".join(_BULK % (len(b), b) for b in (v.encode() for v in values))


_PLAIN = re.compile(r"^[A-Za-z0-9._:@ -]*$")  # needs no JSON escaping


def _json_str(value: str) -> str:
    return f'"{value}"' if _PLAIN.match(value) else json.dumps(value)


def _meta_json(o: Observation, received: int) -> str:
    """``json.dumps`` of the face's ``meta`` (compact), written out directly: it runs for every face."""
    x1, y1, x2, y2 = o.box
    if not math.isfinite(x1 + y1 + x2 + y2 + o.probability + o.face_size):  # not finite if any one is not
        return json.dumps({"box": o.box, "prob": o.probability, "size": o.face_size, "fallback": o.fallback,
                           "track": o.track_id, "backend": o.backend, "model": o.model, "step": o.step_index,
                           "recv": received}, separators=(",", ":"))
    return (f'{{"box":[{x1!r},{y1!r},{x2!r},{y2!r}],"prob":{float(o.probability)!r},"size":{float(o.face_size)!r},'
            f'"fallback":{"true" if o.fallback else "false"},"track":{_json_str(o.track_id)},'
            f'"backend":{_json_str(o.backend)},"model":{_json_str(o.model)},"step":{int(o.step_index)},'
            f'"recv":{int(received)}}}')


@dataclass(frozen=True)
class Match:
    """The gallery identity an observation was matched to at ingest."""

    identity_id: str
    distance: float
    watchlist: bool


@dataclass
class FaceRecord:
    """A stored observation as read back from Redis (the feature stays out of ``as_dict``)."""

    face_id: str
    camera_id: str
    capture_time_ms: int
    box: tuple[float, float, float, float]
    probability: float
    face_size: float
    fallback: bool
    track_id: str
    backend: str
    model: str
    step_index: int
    received_ms: int
    identity_id: str | None
    distance: float | None
    base_layer: bytes = field(repr=False)
    feature: np.ndarray = field(repr=False)

    @classmethod
    def from_hash(cls, face_id: str, h: dict[bytes, bytes], sealer: Sealer | None = None) -> FaceRecord:
        """The record from its Redis hash; sealed values are opened with ``sealer`` (:class:`StorageKeyError`)."""
        s = {k.decode(): v for k, v in h.items()}
        sealer = sealer or _NO_KEY
        meta = json.loads(s["meta"])
        ident = s.get("identity", b"").decode() or None
        dist = s.get("distance", b"").decode()
        return cls(face_id, s["camera"].decode(), int(s["t"]), tuple(meta["box"]), meta["prob"], meta["size"],
                   meta["fallback"], meta["track"], meta["backend"], meta["model"], meta["step"], meta["recv"],
                   ident, float(dist) if dist else None, sealer.open(s["base"], seal_context(face_id, "base")),
                   np.frombuffer(sealer.open(s["feat"], seal_context(face_id, "feat")), np.float32))


_NO_KEY = Sealer(None)
SEALED_FIELDS = ("base", "feat")


def seal_context(face_id: str, name: str) -> bytes:
    """What a sealed value is bound to (GCM associated data): its face and field (``enh``: enhancement)."""
    return f"face:{face_id}:{name}".encode()


class FaceStore:
    """All face-record reads and writes; one instance per server (async Redis client)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_s: int, events_max: int = 100_000,
                 audit_max: int = 1_000_000, enhancement_ttl_s: int = 86_400, sealer: Sealer | None = None,
                 audit_retention_s: int = 400 * 86_400):
        self.redis = redis
        self.sealer = sealer or _NO_KEY
        self.keys = keys
        self.retention_ms = retention_s * 1000
        self.events_max = events_max
        self.audit_max = audit_max
        self.audit_retention_ms = audit_retention_s * 1000
        self.enhancement_ttl_ms = enhancement_ttl_s * 1000
        self._store_sha: str | None = None

    # -- ingest ------------------------------------------------------------------------------
    def _store_call(self, observations: list[Observation], matches: list[Match | None]) -> tuple[int, bytes]:
        """``numkeys key... arg...`` of the batch-store script call in RESP (see :data:`_STORE_BATCH`),
        and how many bulk strings that is.

        Written straight to the wire format, one formatting operation per face: this runs for
        every face ingested.
        """
        k = self.keys
        received = now_ms()
        sealed = self.sealer.enabled
        index_keys: dict[str, bytes] = {}  # camera / identity index keys repeat within a batch
        key_parts = [_bulks(k.faces, k.events, k.matched)]
        arg_parts = [_bulks(str(self.events_max), str(self.retention_ms))]
        for o, m in zip(observations, matches):
            face_id = o.face_id
            if m is None:
                ident, watch, distance = "", b"0", b""
            else:
                ident, watch, distance = m.identity_id, b"1" if m.watchlist else b"0", repr(m.distance).encode()
            camera_key = index_keys.get(o.camera_id) or index_keys.setdefault(o.camera_id,
                                                                               k.camera_faces(o.camera_id).encode())
            ident_key = index_keys.get("\0" + ident) or index_keys.setdefault("\0" + ident,
                                                                              k.identity_faces(ident).encode())
            face_key, tomb_key = k.face(face_id).encode(), k.tombstone(face_id).encode()
            key_parts.append(_FOUR % (len(face_key), face_key, len(tomb_key), tomb_key, len(camera_key), camera_key,
                                      len(ident_key), ident_key))
            base, feature = o.base_layer, o.feature.astype(np.float32, copy=False).tobytes()
            if sealed:
                base = self.sealer.seal(base, seal_context(face_id, "base"))
                feature = self.sealer.seal(feature, seal_context(face_id, "feat"))
            fid, t, ident_b, cam = face_id.encode(), b"%d" % o.capture_ms, ident.encode(), o.camera_id.encode()
            meta = _meta_json(o, received).encode()
            arg_parts.append(_NINE % (len(fid), fid, len(t), t, len(ident_b), ident_b, 1, watch, len(distance),
                                      distance, len(cam), cam, len(base), base, len(feature), feature,
                                      len(meta), meta))
        n = len(observations)
        return 1 + 3 + 4 * n + 2 + 9 * n, b"".join([_bulks(str(3 + 4 * n)), *key_parts, *arg_parts])

    async def store_batch(self, observations: list[Observation], matches: list[Match | None]) -> list[int]:
        """Store a batch in one script call (one round trip); per face STORED, DUPLICATE or ERASED."""
        if not observations:
            return []
        n_items, call = self._store_call(observations, matches)
        for attempt in range(3):
            if self._store_sha is None:
                self._store_sha = await self.redis.script_load(_STORE_BATCH)
            # EVALSHA, not redis-py's Script (which adds a SCRIPT EXISTS round trip).
            try:
                out = await self._call_packed(b"*%d\r\n%b%b" % (n_items + 2, _bulks("EVALSHA", self._store_sha), call))
                break
            except NoScriptError:
                self._store_sha = None  # Redis restarted or flushed its scripts: load again, rerun (idempotent)
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == 2:
                    raise  # the script is idempotent: a retry after a broken connection is safe
        else:
            raise NoScriptError("the batch-store script could not be loaded")
        return [c - 48 for c in out]  # the script answers one digit per face

    async def _call_packed(self, packed: bytes):
        """Send one command already in RESP form on a pooled connection; its reply.

        The ingest hot path: redis-py packs about 4x slower than :meth:`_store_call`, and a
        batch has 13 arguments per face.
        """
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed)
            return await conn.read_response()
        except ResponseError:
            raise  # an error reply: the connection is in a clean state
        except BaseException:
            await conn.disconnect()  # half a reply may be left on it: do not reuse it
            raise
        finally:
            await pool.release(conn)

    async def touch_camera(self, camera_id: str, **info) -> None:
        raw = await self.redis.hget(self.keys.cameras, camera_id)
        cur = json.loads(raw) if raw else {}
        cur.update(info)
        await self.redis.hset(self.keys.cameras, camera_id, json.dumps(cur))

    async def cameras(self) -> dict[str, dict]:
        raw = await self.redis.hgetall(self.keys.cameras)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    # -- reads -------------------------------------------------------------------------------
    async def get(self, face_id: str) -> FaceRecord | None:
        h = await self.redis.hgetall(self.keys.face(face_id))
        return FaceRecord.from_hash(face_id, h, self.sealer) if h else None

    async def get_many(self, face_ids: list[str], fields: tuple[str, ...] | None = None) -> list:
        """Records (or selected raw fields, sealed ones opened) of ``face_ids``, ``None`` for expired ones,
        in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for f in face_ids:
                if fields:
                    pipe.hmget(self.keys.face(f), fields)
                else:
                    pipe.hgetall(self.keys.face(f))
            raw = await pipe.execute()
        if fields:
            sealed = [(i, name) for i, name in enumerate(fields) if name in SEALED_FIELDS]
            out = []
            for f, r in zip(face_ids, raw):
                if r[0] is None:
                    out.append(None)
                    continue
                for i, name in sealed:
                    if r[i] is not None:
                        r[i] = self.sealer.open(r[i], seal_context(f, name))
                out.append(r)
            return out
        return [FaceRecord.from_hash(f, h, self.sealer) if h else None for f, h in zip(face_ids, raw)]

    def index_key(self, camera_id: str | None = None, identity_id: str | None = None, matched: bool | None = None) -> str:
        """The most selective time index for these filters."""
        if identity_id:
            return self.keys.identity_faces(identity_id)
        if matched:
            return self.keys.matched
        if camera_id:
            return self.keys.camera_faces(camera_id)
        return self.keys.faces

    async def scan_ids(self, key: str, since_ms: int | None, until_ms: int | None, offset: int,
                       count: int) -> list[str]:
        """Face ids of one time index, newest first, ``count`` from ``offset`` within [since, until]."""
        hi = "+inf" if until_ms is None else until_ms
        lo = "-inf" if since_ms is None else since_ms
        raw = await self.redis.zrevrangebyscore(key, hi, lo, start=offset, num=count)
        return [r.decode() for r in raw]

    async def count(self, key: str | None = None) -> int:
        return await self.redis.zcard(key or self.keys.faces)

    async def camera_counts(self, camera_ids: Iterable[str]) -> dict[str, int]:
        ids = list(camera_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for c in ids:
                pipe.zcard(self.keys.camera_faces(c))
            out = await pipe.execute()
        return dict(zip(ids, out))

    async def assign_match(self, face_id: str, identity_id: str, distance: float) -> FaceRecord | None:
        """Match a stored face to ``identity_id`` after the fact (an operator enrolled it, or added it to
        the identity): its record and the time indexes of matched faces and identities say so, as an
        ingest match would. ``None`` when the face is gone (expired, erased)."""
        key = self.keys.face(face_id)
        t, old = await self.redis.hmget(key, ["t", "identity"])
        if t is None:
            return None
        old_identity = (old or b"").decode() or identity_id
        # One script: a record that expired meanwhile is not brought back as a hash without a TTL.
        done = await self.redis.eval(_ASSIGN_MATCH, 4, key, self.keys.matched, self.keys.identity_faces(identity_id),
                                     self.keys.identity_faces(old_identity), identity_id, repr(float(distance)),
                                     int(t), face_id)
        return await self.get(face_id) if done else None

    # -- enhancement layers ------------------------------------------------------------------
    async def put_enhancement(self, face: FaceRecord, payload: bytes) -> bool:
        """Cache an enhancement layer for at most ``enhancement_ttl_s`` and never past the face's expiry."""
        ttl = min(self.enhancement_ttl_ms, face.capture_time_ms + self.retention_ms - now_ms())
        if ttl <= 0:
            return False
        sealed = self.sealer.seal(payload, seal_context(face.face_id, "enh"))
        await self.redis.set(self.keys.enhancement(face.face_id), sealed, px=ttl)
        return True

    async def get_enhancement(self, face_id: str) -> bytes | None:
        raw = await self.redis.get(self.keys.enhancement(face_id))
        return None if raw is None else self.sealer.open(raw, seal_context(face_id, "enh"))

    # -- privacy -----------------------------------------------------------------------------
    async def delete_faces(self, face_ids: list[str]) -> dict[str, list[str]]:
        """Erase records, cached layers and index entries; returns camera id -> erased face ids.

        A tombstone (kept for the retention period) stops an edge's replay from storing them again.
        """
        if not face_ids:
            return {}
        records = await self.get_many(face_ids, fields=("camera", "identity"))
        by_camera: dict[str, list[str]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for f, r in zip(face_ids, records):
                pipe.delete(self.keys.face(f), self.keys.enhancement(f))
                pipe.zrem(self.keys.faces, f)
                pipe.zrem(self.keys.matched, f)
                pipe.set(self.keys.tombstone(f), b"1", px=self.retention_ms)
                if r is None:
                    continue
                camera, ident = r[0].decode(), (r[1] or b"").decode()
                by_camera.setdefault(camera, []).append(f)
                pipe.zrem(self.keys.camera_faces(camera), f)
                if ident:
                    pipe.zrem(self.keys.identity_faces(ident), f)
                pipe.xadd(self.keys.events, {"type": "face_deleted", "face_id": f, "camera_id": camera},
                          maxlen=self.events_max, approximate=True)
            await pipe.execute()
        return by_camera

    async def add_pending_drops(self, camera_id: str, face_ids: list[str]) -> None:
        """Remember texture drops for a camera until its edge confirms them (kept for the retention period)."""
        if face_ids:
            key = self.keys.pending_drops(camera_id)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(key, *face_ids)
                pipe.pexpire(key, self.retention_ms)
                await pipe.execute()

    async def pending_drops(self, camera_id: str) -> list[str]:
        """The face ids whose texture the camera's edge has not yet confirmed dropping."""
        return sorted(m.decode() for m in await self.redis.smembers(self.keys.pending_drops(camera_id)))

    async def forget_drops(self, camera_id: str, face_ids: list[str]) -> None:
        """The edge confirmed these drops."""
        if face_ids:
            await self.redis.srem(self.keys.pending_drops(camera_id), *face_ids)

    # -- events and audit --------------------------------------------------------------------
    async def event(self, kind: str, **fields: str) -> None:
        await self.redis.xadd(self.keys.events, {"type": kind, **fields}, maxlen=self.events_max, approximate=True)

    async def events(self, count: int = 100, after: str | None = None) -> list[tuple[str, dict[str, str]]]:
        if after:
            raw = await self.redis.xrange(self.keys.events, min=f"({after}", count=count)
        else:
            raw = list(reversed(await self.redis.xrevrange(self.keys.events, count=count)))
        return [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw]

    async def audit(self, who: str, action: str, **fields: str | int) -> None:
        """Append to the audit log: who did what to which face, when, with what outcome."""
        entry = {"who": who, "action": action, "time_ms": now_ms(), **fields}
        await self.redis.xadd(self.keys.audit, {k: str(v) for k, v in entry.items()}, maxlen=self.audit_max,
                              approximate=True)

    async def audit_entries(self, count: int = 100, face_id: str | None = None, scan: int = 10_000) -> list[dict[str, str]]:
        """Newest entries first, optionally only those about one face (among the last ``scan`` entries)."""
        raw = await self.redis.xrevrange(self.keys.audit, count=scan if face_id else count)
        out = []
        for i, f in raw:
            e = {k.decode(): v.decode() for k, v in f.items()}
            if face_id and e.get("face_id") != face_id:
                continue
            out.append({"id": i.decode(), **e})
            if len(out) >= count:
                break
        return out

    # -- retention ---------------------------------------------------------------------------
    async def sweep(self, identity_ids: Iterable[str] = ()) -> int:
        """Delete face records past the retention period and their cached enhancement layers, drop
        their index entries and older events and audit entries; returns the index entries removed
        (one per face and index it was in; 0 when nothing expired).

        Redis expires each face record by itself, but only when it samples or touches the key:
        until then the record stays in memory and in every AOF rewrite or RDB snapshot. Deleting
        every record the index says is past its time makes expiry as definite as erasure.
        """
        cutoff = now_ms() - self.retention_ms
        expired = 0
        while True:
            ids = await self.redis.zrangebyscore(self.keys.faces, "-inf", f"({cutoff}", start=0, num=SWEEP_CHUNK)
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for f in ids:
                    pipe.unlink(self.keys.face(f.decode()), self.keys.enhancement(f.decode()))
                pipe.zrem(self.keys.faces, *ids)
                await pipe.execute()
            expired += len(ids)
        cameras = await self.redis.hkeys(self.keys.cameras)
        keys = [self.keys.matched] + [self.keys.camera_faces(c.decode()) for c in cameras]
        keys += [self.keys.identity_faces(i) for i in identity_ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.zremrangebyscore(k, "-inf", f"({cutoff}")
            pipe.xtrim(self.keys.events, minid=str(max(cutoff, 0)), approximate=False)
            pipe.xtrim(self.keys.audit, minid=str(max(now_ms() - self.audit_retention_ms, 0)), approximate=False)
            out = await pipe.execute()
        return expired + int(sum(out[:-2]))
