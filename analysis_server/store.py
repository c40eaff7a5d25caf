"""Face records, their time indexes and counts, the search index's change log, the events stream,
enhancement layers and the audit log, in Redis (one server or a Redis Cluster).

Storage layout 2 (keys in :mod:`analysis_server.keys`, the record in :mod:`analysis_server.records`):
a face is one packed value in one of 65,536 record hashes, found by the hash of its id; the base
layer is the only copy of its feature. Time indexes are sorted sets split by 5 minutes of capture
time (and, for the index of all faces, by 16 shards), so that each stays a compact ziplist and no
key is hot on a cluster; per-index directories say which periods hold entries, and per-period
counters give counts without reading indexes. About 250 bytes of Redis memory a face with every
index (``bench/results/history.json``), against about 1.9 kB in layout 1.

Writes from the streams: on one Redis, one Lua script call per batch stores each face only if
neither it nor its erasure tombstone exists (a replayed observation is acknowledged and not stored
twice; an erased face is never brought back by a replay) and writes its index entries, counts,
change-log entry and event in the same step. On a cluster a script may touch one slot only, so the
batch is two round trips of single-key commands, one connection per node: the record
(``HSETNX``) with the entry of the all-faces index that retention relies on (``ZADD NX``), then,
for the faces stored, the other entries. A crash between the two leaves a record the edge's
replay completes (a duplicate's entries are written again; entries are idempotent).

Readers check every index entry against its record (alive, same id, same capture time, same
camera and match), so an entry left behind by a crash, an erasure or a re-match is skipped, never
shown. Records of faces past retention are deleted by :meth:`FaceStore.sweep`, which walks the
all-faces index. With a storage key (``FACESERVER_STORAGE_KEY``) base layers and cached
enhancement layers are sealed with AES-256-GCM (:mod:`analysis_server.at_rest`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from analysis_server import records as rec
from analysis_server.at_rest import Sealer
from analysis_server.errors import InvalidInput
from analysis_server.keys import Keys
from analysis_server.redis_batch import Batch, bulk, execute, is_cluster
from analysis_server.records import PERIOD_MS, SHARDS, bucket_of, face_hash, log_shard, period_of, shard_of
from analysis_server.validation import Observation

log = logging.getLogger(__name__)

STORED, DUPLICATE, ERASED, COLLISION = 1, 0, 2, 3
LAYOUT = 2
SWEEP_CHUNK = 2000  # expired faces deleted per round trip
MIGRATE_CHUNK = 1000
_TIES = 8  # entries sharing the cursor's capture ms read beyond a page's share (more: a second read)
_ID_AT = rec._HEAD.size + 1  # where the face id starts in a record value (Lua strings count from 1)

# One call stores a batch on one Redis (not on a cluster: its keys are in many slots).
# KEYS: events, then per face: record hash, all-faces index, camera index, identity index (the
# record hash again when unmatched), change log, counts; then directories to add a period to. The
# change log gets one entry per log key: the hashes of the faces stored, 8 bytes each.
# ARGV: events maxlen, face count, directory count, then per face: hash, record, face id, capture
# ms, camera, identity ("" = none), distance, watchlist flag; then each directory's period.
# Returns one digit per face: 1 stored, 0 already stored, 2 erased (tombstone), 3 another face
# id with the same hash.
_STORE_BATCH = """
local n, nd = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, counts, order, logs, lorder = {}, {}, {}, {}, {}
local function count(key, f, d)
  local c = counts[key]
  if not c then c = {}; counts[key] = c; order[#order + 1] = key end
  c[f] = (c[f] or 0) + d
end
for i = 0, n - 1 do
  local k, a = 2 + 6 * i, 4 + 8 * i
  local rkey, h, id, t = KEYS[k], ARGV[a], ARGV[a + 2], ARGV[a + 3]
  if redis.call('HSETNX', rkey, h, ARGV[a + 1]) == 1 then
    local cam, ident, dist = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
    redis.call('ZADD', KEYS[k + 1], t, id)
    redis.call('ZADD', KEYS[k + 2], t, id)
    local lk = KEYS[k + 4]
    local l = logs[lk]
    if not l then l = {}; logs[lk] = l; lorder[#lorder + 1] = lk end
    l[#l + 1] = h
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', 'observation', 'face_id', id,
               'camera_id', cam, 'capture_time_ms', t, 'identity_id', ident, 'distance', dist)
    count(KEYS[k + 5], 'a', 1)
    count(KEYS[k + 5], 'c:' .. cam, 1)
    if ident ~= '' then
      redis.call('ZADD', KEYS[k + 3], t, id)
      count(KEYS[k + 5], 'm', 1)
      count(KEYS[k + 5], 'i:' .. ident, 1)
      if ARGV[a + 7] == '1' then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', 'watchlist_hit', 'face_id', id,
                   'camera_id', cam, 'capture_time_ms', t, 'identity_id', ident, 'distance', dist)
      end
    end
    out[i + 1] = 1
  else
    local v = redis.call('HGET', rkey, h)
    if string.byte(v, 1) == 0 then
      out[i + 1] = 2
    else
      local len = string.byte(v, %d)
      out[i + 1] = (string.sub(v, %d, %d + len) == id) and 0 or 3
    end
  end
end
for _, key in ipairs(order) do
  for f, d in pairs(counts[key]) do redis.call('HINCRBY', key, f, d) end
end
for _, key in ipairs(lorder) do redis.call('XADD', key, '*', 'a', table.concat(logs[key])) end
for j = 1, nd do
  local p = ARGV[3 + 8 * n + j]
  redis.call('ZADD', KEYS[1 + 6 * n + j], p, p)
end
return table.concat(out)
""" % (_ID_AT, _ID_AT + 1, _ID_AT)

# A batch's events in one call on the events stream (a cluster: the stream is one key on one node, and one
# command per event made that node the busiest): ARGV = MAXLEN, then 6 values per event (type, face id,
# camera id, capture ms, identity id, distance); returns the entries' ids in order.
_ADD_EVENTS = """
local out = {}
for i = 2, #ARGV, 6 do
  out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'face_id', ARGV[i + 1],
    'camera_id', ARGV[i + 2], 'capture_time_ms', ARGV[i + 3], 'identity_id', ARGV[i + 4], 'distance', ARGV[i + 5])
end
return out
"""

# Erase one face's record (one key, any node): the live record becomes a tombstone with its capture
# time. KEYS: record hash. ARGV: hash, face id. Returns the record replaced, or nil.
_ERASE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.byte(v, 1) == 0 then return false end
local len = string.byte(v, %d)
if string.sub(v, %d, %d + len) ~= ARGV[2] then return false end
redis.call('HSET', KEYS[1], ARGV[1], string.char(0) .. string.sub(v, 2, 9) .. string.sub(v, %d, %d + len))
return v
""" % (_ID_AT, _ID_AT + 1, _ID_AT, _ID_AT, _ID_AT)

# Replace one value if it is still what was read (one key). KEYS: record hash. ARGV: hash, old, new.
_SWAP = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Match:
    """The gallery identity an observation was matched to at ingest."""

    identity_id: str
    distance: float
    watchlist: bool


_model_names: dict[tuple[str, int], str] = {}


def _header_of(payload: bytes) -> tuple[str, str, int]:
    """(backend, model name, step) from a base layer's own header."""
    from facecodec import base_layer
    from facecodec.errors import FaceCodecError

    try:
        h = base_layer.read_header(payload)
    except FaceCodecError:
        return "", "", 0
    name = _model_names.get((h.backend, h.model_tag))
    if name is None:
        try:
            name = _model_names[(h.backend, h.model_tag)] = base_layer.model_for_tag(h.backend, h.model_tag)
        except FaceCodecError:
            name = f"unknown model tag {h.model_tag}"
    return h.backend, name, h.step_index


@dataclass
class FaceRecord:
    """A stored observation as read back from Redis (its feature is decoded from the base layer when asked)."""

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
    _feature: np.ndarray | None = field(default=None, repr=False)

    @property
    def feature(self) -> np.ndarray:
        """The decoded base layer (what the server matches on)."""
        if self._feature is None:
            from facecodec import base_layer

            self._feature = base_layer.decode(self.base_layer).feature.astype(np.float32, copy=False)
        return self._feature

    @classmethod
    def from_value(cls, value: bytes, sealer: Sealer | None = None) -> FaceRecord:
        """The record from its stored value (layout 2); a sealed base layer is opened (:class:`StorageKeyError`)."""
        r = rec.unpack_record(value)
        base = (sealer or _NO_KEY).open(r.base, seal_context(r.face_id, "base"))
        backend, model, step = _header_of(base)
        return cls(r.face_id, r.camera_id, r.capture_ms, r.box, r.probability, r.face_size, r.fallback, r.track_id,
                   backend, model, step, r.received_ms, r.identity_id or None, r.distance, base)

    @classmethod
    def from_legacy_hash(cls, face_id: str, h: dict[bytes, bytes], sealer: Sealer | None = None) -> FaceRecord:
        """A record of storage layout 1 (a hash per face), read to migrate it."""
        s = {k.decode(): v for k, v in h.items()}
        sealer = sealer or _NO_KEY
        meta = json.loads(s["meta"])
        ident = s.get("identity", b"").decode() or None
        dist = s.get("distance", b"").decode()
        return cls(face_id, s["camera"].decode(), int(s["t"]), tuple(meta["box"]), meta["prob"], meta["size"],
                   meta["fallback"], meta["track"], meta["backend"], meta["model"], meta["step"], meta["recv"],
                   ident, float(dist) if dist else None, sealer.open(s["base"], seal_context(face_id, "base")))


_NO_KEY = Sealer(None)


def seal_context(face_id: str, name: str) -> bytes:
    """What a sealed value is bound to (GCM associated data): its face and field (``enh``: enhancement)."""
    return f"face:{face_id}:{name}".encode()


def _scored(raw: list) -> list[tuple[bytes, float]]:
    """A WITHSCORES reply as (member, score) pairs (RESP3 nests pairs, RESP2 flattens them)."""
    if raw and isinstance(raw[0], list):
        return [(m, float(sc)) for m, sc in raw]
    return [(raw[i], float(raw[i + 1])) for i in range(0, len(raw), 2)]


def _as_dict(raw) -> dict:
    """A HGETALL reply as a dict (RESP3 answers a map, RESP2 a flat list)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[0::2], raw[1::2])) if raw else {}


def encode_cursor(t: int, face_id: str) -> str:
    return base64.urlsafe_b64encode(f"{t}.{face_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(capture ms, face id) of a listing cursor; :class:`InvalidInput` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        t, face_id = raw.split(".", 1)
        return int(t), face_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this server gave out") from None


@dataclass
class Page:
    """One page of a listing, newest first."""

    records: list[FaceRecord]
    next_cursor: str | None  # where the next page starts; None: nothing older matches
    truncated: bool = False  # the scan bound stopped it before the page was full
    scanned: int = 0  # index entries read


@dataclass
class _Face:
    """A face of a batch being stored, with everything its keys need."""

    o: Observation
    h: bytes
    value: bytes
    identity: str
    distance: bytes
    watch: bytes
    record_key: str
    all_key: str
    camera_key: str
    identity_key: str | None
    log_key: str
    counts_key: str
    period: int


class FaceStore:
    """All face-record reads and writes; one instance per server (async Redis client, or cluster client)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, retention_s: int, events_max: int = 100_000,
                 audit_max: int = 1_000_000, enhancement_ttl_s: int = 86_400, sealer: Sealer | None = None,
                 audit_retention_s: int = 400 * 86_400):
        self.redis = redis
        self.cluster = is_cluster(redis)
        self.sealer = sealer or _NO_KEY
        self.keys = keys
        self.retention_ms = retention_s * 1000
        self.events_max = events_max
        self.audit_max = audit_max
        self.audit_retention_ms = audit_retention_s * 1000
        self.enhancement_ttl_ms = enhancement_ttl_s * 1000
        self._store_sha: str | None = None
        self._known_periods: set[tuple[str, int]] = set()  # directory entries this process wrote
        # Called with [(hash, capture ms, camera id, feature)] of the faces a batch stored (the search index).
        self.on_stored = None

    async def check_layout(self) -> None:
        """Write this layout's marker (or check the one written) before anything is stored."""
        want = {"version": str(LAYOUT), "buckets": str(rec.BUCKETS), "shards": str(SHARDS),
                "period_ms": str(PERIOD_MS)}
        raw = await self.redis.hgetall(self.keys.layout)
        if not raw:
            await self.redis.hset(self.keys.layout, mapping=want)
            return
        have = {k.decode(): v.decode() for k, v in raw.items()}
        if have != want:
            from analysis_server.errors import ConfigurationError

            raise ConfigurationError(f"Redis holds storage layout {have} under prefix {self.keys.prefix!r}; this "
                                     f"server writes {want}: run the server version that wrote it, or another "
                                     "FACESERVER_KEY_PREFIX")

    # -- ingest ------------------------------------------------------------------------------
    def _prepare(self, observations: list[Observation], matches: list[Match | None],
                 received: int | list[int] | None = None) -> list[_Face]:
        k = self.keys
        received = received or now_ms()
        receipts = received if isinstance(received, list) else [received] * len(observations)
        seal = self.sealer.seal if self.sealer.enabled else None
        out = []
        for o, m, received in zip(observations, matches, receipts):
            h = face_hash(o.face_id)
            base = seal(o.base_layer, seal_context(o.face_id, "base")) if seal else o.base_layer
            if m is None:
                ident, dist, watch = "", b"", b"0"
            else:
                ident, dist, watch = m.identity_id, repr(m.distance).encode(), b"1" if m.watchlist else b"0"
            value = rec.pack_record(o.face_id, o.camera_id, o.capture_ms, received, o.box, o.probability,
                                    o.face_size, o.fallback, o.track_id, ident, m.distance if m else None, base)
            p = period_of(o.capture_ms)
            shard, matched = shard_of(h), bool(ident)
            out.append(_Face(o, h, value, ident, dist, watch, k.records(bucket_of(h)),
                             k.all_index(shard, matched, p), k.camera_index(o.camera_id, matched, p),
                             k.identity_index(ident, p) if ident else None, k.change_log(log_shard(o.camera_id)),
                             k.counts(p), p))
        return out

    def _directories(self, faces: list[_Face]) -> list[tuple[str, int]]:
        """The (directory, period) entries these faces need that this process has not written yet."""
        k = self.keys
        want = set()
        for f in faces:
            matched = bool(f.identity)
            for state in (None, matched):
                want.add((k.all_periods(state), f.period))
                want.add((k.camera_periods(f.o.camera_id, state), f.period))
            if matched:
                want.add((k.identity_periods(f.identity), f.period))
        return sorted(want - self._known_periods)

    async def store_batch(self, observations: list[Observation], matches: list[Match | None],
                          received_ms: int | None = None) -> list[int]:
        """Store a batch; per face STORED, DUPLICATE, ERASED (a tombstone) or COLLISION (another face id
        with the same 8-byte hash: not stored)."""
        if not observations:
            return []
        faces = self._prepare(observations, matches, received_ms)
        dirs = self._directories(faces)
        if self.cluster:
            outcome = await self._store_commands(faces, dirs, events=True)
        else:
            outcome = await self._store_script(faces, dirs)
        self._known_periods.update(dirs)
        if self.on_stored is not None:
            stored = [(f.h, f.o.capture_ms, f.o.camera_id, f.o.feature) for f, r in zip(faces, outcome)
                      if r == STORED]
            if stored:
                self.on_stored(stored)
        return outcome

    async def _store_script(self, faces: list[_Face], dirs: list[tuple[str, int]]) -> list[int]:
        n = len(faces)
        parts = [b"EVALSHA", None, b"%d" % (1 + 6 * n + len(dirs)), self.keys.events.encode()]
        for f in faces:
            parts += [f.record_key.encode(), f.all_key.encode(), f.camera_key.encode(),
                      (f.identity_key or f.record_key).encode(), f.log_key.encode(), f.counts_key.encode()]
        parts += [d.encode() for d, _ in dirs]
        parts += [b"%d" % self.events_max, b"%d" % n, b"%d" % len(dirs)]
        for f in faces:
            parts += [f.h, f.value, f.o.face_id.encode(), b"%d" % f.o.capture_ms, f.o.camera_id.encode(),
                      f.identity.encode(), f.distance, f.watch]
        parts += [b"%d" % p for _, p in dirs]
        for attempt in range(3):
            if self._store_sha is None:
                self._store_sha = await self.redis.script_load(_STORE_BATCH)
            parts[1] = self._store_sha.encode() if isinstance(self._store_sha, str) else self._store_sha
            b = Batch()
            b.keys.append(b"")
            b.packed.append(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts))
            try:
                (out,) = await execute(self.redis, b)
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == 2:
                    raise  # the script is idempotent: a retry after a broken connection is safe
                continue
            if isinstance(out, NoScriptError):
                self._store_sha = None  # Redis restarted or flushed its scripts: load again, rerun
                continue
            if isinstance(out, Exception):
                raise out
            return [c - 48 for c in out]  # one digit per face
        raise NoScriptError("the batch-store script could not be loaded")

    async def _store_commands(self, faces: list[_Face], dirs: list[tuple[str, int]], events: bool) -> list[int]:
        """The batch as single-key commands (a cluster), in one round trip (one connection per node):
        each record only if its field is free (``HSETNX``), and every other write as if each face were
        new; entries of one index key go in one command. A face that was not new (a replay, an erased
        face, another id with its hash: rare) has what was written for it taken back in a second round
        trip: its count, its events, and the index entries that are not its own."""
        b = Batch()
        by_key: dict[str, list] = {}
        for f in faces:
            by_key.setdefault(f.all_key, []).extend((b"%d" % f.o.capture_ms, f.o.face_id.encode()))
        for key, args in by_key.items():
            b.add("ZADD", key, "NX", *args)
        at = len(b)
        for f in faces:
            b.add_packed(f.record_key, b"*4\r\n$6\r\nHSETNX\r\n" + bulk(f.record_key.encode()) + bulk(f.h)
                         + bulk(f.value))
        counts: dict[str, dict[str, int]] = {}
        logs: dict[str, list[bytes]] = {}
        entries: dict[str, list[bytes]] = {}
        event_at: list[list[int]] = []  # each face's events, by their place in the events call's reply
        event_args: list[bytes] = []
        for f in faces:
            t, fid = b"%d" % f.o.capture_ms, f.o.face_id.encode()
            entries.setdefault(f.camera_key, []).extend((t, fid))
            if f.identity_key:
                entries.setdefault(f.identity_key, []).extend((t, fid))
            logs.setdefault(f.log_key, []).append(f.h)
            for name, d in self._counted(f):
                c = counts.setdefault(f.counts_key, {})
                c[name] = c.get(name, 0) + d
            mine = []
            if events:
                fields = (fid, f.o.camera_id.encode(), t, f.identity.encode(), f.distance)
                mine.append(len(event_args) // 6)
                event_args += (b"observation", *fields)
                if f.identity and f.watch == b"1":
                    mine.append(len(event_args) // 6)
                    event_args += (b"watchlist_hit", *fields)
            event_at.append(mine)
        at_events = b.add_keyed(self.keys.events, "EVAL", _ADD_EVENTS, 1, self.keys.events, self.events_max,
                                *event_args) if event_args else None
        for key, args in entries.items():  # NX: a replay never moves the entry of the face it repeats
            b.add("ZADD", key, "NX", *args)
        for key, c in counts.items():
            for name, d in c.items():
                b.add("HINCRBY", key, name, d)
        for d, p in dirs:
            b.add("ZADD", d, p, p)
        for key, hs in logs.items():  # a face not new gets a second entry: one row the index skips
            b.add("XADD", key, "*", "a", b"".join(hs))
        res = await execute(self.redis, b, raise_errors=True)
        outcome = [STORED if res[at + i] == 1 else DUPLICATE for i in range(len(faces))]
        dup = [i for i, r in enumerate(outcome) if r == DUPLICATE]
        if not dup:
            return outcome
        # A replay, an erased face or a hash collision: the stored value says which.
        check = Batch()
        for i in dup:
            check.add("HGET", faces[i].record_key, faces[i].h)
        undo = Batch()
        for i, v in zip(dup, await execute(self.redis, check, raise_errors=True)):
            f = faces[i]
            if v is None or rec.is_tombstone(v):
                outcome[i] = ERASED
            elif rec.value_face_id(v) != f.o.face_id:
                outcome[i] = COLLISION
            kept: set[str] = set()  # the stored face's own entries (added NX: left as they were)
            if outcome[i] == DUPLICATE:
                r = rec.unpack_record(v)
                p = period_of(r.capture_ms)
                kept = {self.keys.camera_index(r.camera_id, bool(r.identity_id), p)}
                if r.identity_id:
                    kept.add(self.keys.identity_index(r.identity_id, p))
            for key in (f.camera_key, f.identity_key):  # entries that point to no record of this face
                if key and key not in kept:
                    undo.add("ZREM", key, f.o.face_id)
            for name, d in self._counted(f):
                undo.add("HINCRBY", f.counts_key, name, -d)
            for j in event_at[i]:
                undo.add("XDEL", self.keys.events, res[at_events][j])
        await execute(self.redis, undo, raise_errors=True)
        return outcome

    @staticmethod
    def _counted(f: _Face) -> list[tuple[str, int]]:
        """The counts a stored face adds to (its period's: all, its camera, matched, its identity)."""
        out = [("a", 1), ("c:" + f.o.camera_id, 1)]
        if f.identity:
            out += [("m", 1), ("i:" + f.identity, 1)]
        return out

    async def touch_camera(self, camera_id: str, **info) -> None:
        raw = await self.redis.hget(self.keys.cameras, camera_id)
        cur = json.loads(raw) if raw else {}
        cur.update(info)
        await self.redis.hset(self.keys.cameras, camera_id, json.dumps(cur))

    async def camera_known(self, camera_id: str) -> bool:
        """Whether the camera ever streamed here (its entry outlives its faces)."""
        return bool(await self.redis.hexists(self.keys.cameras, camera_id))

    async def cameras(self) -> dict[str, dict]:
        raw = await self.redis.hgetall(self.keys.cameras)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    # -- reads -------------------------------------------------------------------------------
    async def values(self, hashes: list[bytes]) -> list[bytes | None]:
        """The stored values (records or tombstones) of face hashes, in one round trip."""
        b = Batch()
        for h in hashes:
            b.add("HGET", self.keys.records(bucket_of(h)), h)
        return await execute(self.redis, b, raise_errors=True)

    async def raw_value(self, face_id: str) -> bytes | None:
        """What Redis holds for ``face_id`` (its record, sealed fields as sealed, or its tombstone)."""
        (v,) = await self.values([face_hash(face_id)])
        return v if v is not None and rec.value_face_id(v) == face_id else None

    def _record(self, face_id: str, value: bytes | None) -> FaceRecord | None:
        if value is None or value[0] != rec.RECORD or rec.value_face_id(value) != face_id:
            return None
        return FaceRecord.from_value(value, self.sealer)

    async def get(self, face_id: str) -> FaceRecord | None:
        (v,) = await self.values([face_hash(face_id)])
        return self._record(face_id, v)

    async def get_many(self, face_ids: list[str]) -> list[FaceRecord | None]:
        """Records of ``face_ids`` (``None`` for unknown, expired or erased ones), in one round trip."""
        values = await self.values([face_hash(f) for f in face_ids])
        return [self._record(f, v) for f, v in zip(face_ids, values)]

    async def rows_by_hash(self, hashes: list[bytes]) -> list[tuple[str, str, int, bytes] | None]:
        """(face id, camera id, capture ms, base layer) of live faces by hash (the search index knows
        faces by their hash), ``None`` for faces gone; sealed base layers opened."""
        out = []
        seal = self.sealer.enabled
        for v in await self.values(hashes):
            if v is None or v[0] != rec.RECORD:
                out.append(None)
                continue
            r = rec.unpack_record(v)
            base = self.sealer.open(r.base, seal_context(r.face_id, "base")) if seal else r.base
            out.append((r.face_id, r.camera_id, r.capture_ms, base))
        return out

    # -- listing -----------------------------------------------------------------------------
    def _index_of(self, camera: str | None, identity: str | None, matched: bool | None):
        """(directory key, period -> [(index key, matched)]) of the most selective index for these filters."""
        k = self.keys
        states = [True, False] if matched is None else [matched]
        if identity:
            return k.identity_periods(identity), lambda p: [(k.identity_index(identity, p), True)]
        if camera:
            return k.camera_periods(camera, matched), lambda p: [(k.camera_index(camera, s, p), s) for s in states]
        return k.all_periods(matched), lambda p: [(k.all_index(sh, s, p), s) for sh in range(SHARDS) for s in states]

    async def _fetch(self, keys: list[tuple[str, bool]], hi_t: int, hi_id: str | None, lo_t: int | None,
                     n: int) -> tuple[list[tuple[int, str, bool]], bool]:
        """Entries of these index keys before (hi_t, hi_id) (hi_id None: at hi_t included) and from
        lo_t, newest first: [(capture ms, face id, matched)], about ``n`` of them, every entry down to
        the last one given; and whether none is left after them.

        Each key is asked for its share of ``n`` (twice the even share): entries down to the newest
        of the last ones of the keys that had more are complete, the rest is left for the next call.
        """
        lo = "-inf" if lo_t is None else lo_t
        m = max(4, (2 * n) // len(keys) + 4)
        asked = m + (_TIES if hi_id is not None else 0)
        b = Batch()
        for key, _ in keys:
            b.add("ZREVRANGEBYSCORE", key, hi_t, lo, "WITHSCORES", "LIMIT", 0, asked)
        res = await execute(self.redis, b, raise_errors=True)
        entries: list[tuple[int, str, bool]] = []
        frontier = None  # the newest of the last entries of keys not read to their end
        for (key, state), raw in zip(keys, res):
            got = [(int(sc), mm.decode(), state) for mm, sc in _scored(raw)]
            full = len(got) == asked
            if hi_id is not None:
                kept = [e for e in got if e[0] < hi_t or e[1] < hi_id]
                if full and len(kept) < m:  # many entries share the cursor's millisecond: read them all
                    ties = await self.redis.zcount(key, hi_t, hi_t)
                    raw2 = await self.redis.zrevrangebyscore(key, hi_t, lo, withscores=True, start=0, num=m + ties)
                    got = [(int(s), mm.decode(), state) for mm, s in raw2]
                    full = len(got) == m + ties
                    kept = [e for e in got if e[0] < hi_t or e[1] < hi_id]
                got = kept
            if full and got:
                last = (got[-1][0], got[-1][1])
                frontier = last if frontier is None or last > frontier else frontier
            entries += got
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        if frontier is None:
            return entries, True
        return [e for e in entries if (e[0], e[1]) >= frontier], False

    async def page(self, camera: str | None = None, identity: str | None = None, matched: bool | None = None,
                   since_ms: int | None = None, until_ms: int | None = None, limit: int = 50,
                   cursor: str | None = None, skip: int = 0, max_scan: int = 100_000,
                   deadline: float | None = None) -> Page:
        """Stored faces newest first (ties: face id descending), answered from the time index of the
        filters: all faces, matched or not, one camera (matched or not), one identity (camera filter
        checked on the record). Starts after ``cursor`` (a :attr:`Page.next_cursor`) and skips
        ``skip`` matching faces; reads at most ``max_scan`` index entries (and stops at ``deadline``,
        ``time.monotonic()``, once it read one chunk), then answers ``truncated`` with a cursor."""
        if identity and matched is False:
            return Page([], None)
        dir_key, keys_of = self._index_of(camera, identity, matched)
        if cursor:
            hi_t, hi_id = decode_cursor(cursor)
            if until_ms is not None and until_ms < hi_t:
                hi_t, hi_id = until_ms, None
        else:
            hi_t, hi_id = (until_ms if until_ms is not None else None), None
        if hi_t is None:  # newest period with entries: capture times may run ahead of this clock
            top = await self.redis.zrevrangebyscore(dir_key, "+inf", "-inf", start=0, num=1)
            if not top:
                return Page([], None)
            hi_t = (int(top[0]) + 1) * PERIOD_MS - 1
        lo_p = "-inf" if since_ms is None else period_of(since_ms)
        out: list[FaceRecord] = []
        scanned = 0
        span = 1  # periods read together: more when they turn out sparse (one identity, matched faces)
        seen_periods = seen_entries = 0
        while True:
            periods = [int(p) for p in await self.redis.zrevrangebyscore(dir_key, period_of(hi_t), lo_p, start=0,
                                                                         num=span)]
            if not periods:
                return Page(out, None, False, scanned)
            if hi_t > (periods[0] + 1) * PERIOD_MS - 1:
                hi_t, hi_id = (periods[0] + 1) * PERIOD_MS - 1, None
            keys = [k for p in periods for k in keys_of(p)]
            before = scanned
            while True:
                n = max(16, limit + skip - len(out))
                entries, exhausted = await self._fetch(keys, hi_t, hi_id, since_ms, min(n, 1000))
                if entries:
                    values = await self.values([face_hash(e[1]) for e in entries])
                    for i, ((t, fid, state), v) in enumerate(zip(entries, values)):
                        scanned += 1
                        hi_t, hi_id = t, fid
                        r = self._check(v, fid, t, state, camera, identity)
                        if r is not None:
                            if skip:
                                skip -= 1
                            else:
                                out.append(r)
                        full = len(out) == limit
                        if full or scanned >= max_scan or (deadline is not None and time.monotonic() > deadline):
                            more = i + 1 < len(entries) or not exhausted or bool(
                                await self.redis.zrevrangebyscore(dir_key, f"({periods[-1]}", lo_p, start=0, num=1))
                            return Page(out, encode_cursor(t, fid) if more else None, more and not full, scanned)
                if exhausted:
                    break
            if len(periods) < span:
                return Page(out, None, False, scanned)
            hi_t, hi_id = periods[-1] * PERIOD_MS - 1, None
            seen_periods, seen_entries = seen_periods + len(periods), seen_entries + scanned - before
            density = seen_entries / seen_periods  # entries a period: as many periods as the page still needs
            span = max(1, min(64, math.ceil(1.5 * (limit + skip - len(out)) / max(density, 0.5))))

    def _check(self, value: bytes | None, face_id: str, t: int, matched: bool, camera: str | None,
               identity: str | None) -> FaceRecord | None:
        """The record an index entry points to, if the entry is still true and it passes the filters."""
        if value is None or value[0] != rec.RECORD:
            return None
        r = rec.unpack_record(value)
        if r.face_id != face_id or r.capture_ms != t or bool(r.identity_id) != matched:
            return None
        if (camera and r.camera_id != camera) or (identity and r.identity_id != identity):
            return None
        return FaceRecord.from_value(value, self.sealer)

    # -- counts ------------------------------------------------------------------------------
    async def _period_counts(self, names: list[str]) -> dict[str, int]:
        periods = await self.redis.zrange(self.keys.all_periods(), 0, -1)
        totals = dict.fromkeys(names, 0)
        if not periods or not names:
            return totals
        b = Batch()
        for p in periods:
            b.add("HMGET", self.keys.counts(int(p)), *names)
        for row in await execute(self.redis, b, raise_errors=True):
            for name, v in zip(names, row):
                if v is not None:
                    totals[name] += int(v)
        return totals

    async def count_faces(self) -> tuple[int, int]:
        """(faces stored, faces matched to an identity)."""
        c = await self._period_counts(["a", "m"])
        return max(0, c["a"]), max(0, c["m"])

    async def camera_counts(self, camera_ids: Iterable[str]) -> dict[str, int]:
        ids = list(camera_ids)
        c = await self._period_counts([f"c:{i}" for i in ids])
        return {i: max(0, c[f"c:{i}"]) for i in ids}

    async def identity_counts(self, identity_ids: Iterable[str]) -> dict[str, int]:
        ids = list(identity_ids)
        c = await self._period_counts([f"i:{i}" for i in ids])
        return {i: max(0, c[f"i:{i}"]) for i in ids}

    # -- matches after the fact ----------------------------------------------------------------
    async def assign_match(self, face_id: str, identity_id: str, distance: float) -> FaceRecord | None:
        """Match a stored face to ``identity_id`` after the fact (an operator enrolled it, or added it to
        the identity): its record, time indexes and counts say so, as an ingest match would. ``None``
        when the face is gone (expired, erased)."""
        h = face_hash(face_id)
        key = self.keys.records(bucket_of(h))
        for _ in range(10):
            old = await self.redis.hget(key, h)
            if old is None or old[0] != rec.RECORD or rec.value_face_id(old) != face_id:
                return None
            new = rec.with_match(old, identity_id, float(distance))
            if await self.redis.eval(_SWAP, 1, key, h, old, new):  # unless erased or changed meanwhile
                break
        else:
            return None
        r = rec.unpack_record(old)
        t, p, k, sh = r.capture_ms, period_of(r.capture_ms), self.keys, shard_of(h)
        b = Batch()
        if not r.identity_id:
            b.add("ZREM", k.all_index(sh, False, p), face_id)
            b.add("ZREM", k.camera_index(r.camera_id, False, p), face_id)
            b.add("HINCRBY", k.counts(p), "m", 1)
        elif r.identity_id != identity_id:
            b.add("ZREM", k.identity_index(r.identity_id, p), face_id)
            b.add("HINCRBY", k.counts(p), f"i:{r.identity_id}", -1)
        b.add("ZADD", k.all_index(sh, True, p), t, face_id)
        b.add("ZADD", k.camera_index(r.camera_id, True, p), t, face_id)
        b.add("ZADD", k.identity_index(identity_id, p), t, face_id)
        if r.identity_id != identity_id:
            b.add("HINCRBY", k.counts(p), f"i:{identity_id}", 1)
        for d in (k.all_periods(), k.all_periods(True), k.camera_periods(r.camera_id),
                  k.camera_periods(r.camera_id, True), k.identity_periods(identity_id)):
            b.add("ZADD", d, p, p)
        await execute(self.redis, b, raise_errors=True)
        return await self.get(face_id)

    async def identity_face_ids(self, identity_id: str) -> list[str]:
        """Every face id in the identity's time index (records not checked)."""
        periods = await self.redis.zrange(self.keys.identity_periods(identity_id), 0, -1)
        b = Batch()
        for p in periods:
            b.add("ZRANGE", self.keys.identity_index(identity_id, int(p)), 0, -1)
        ids: list[str] = []
        for row in await execute(self.redis, b, raise_errors=True):
            ids += [m.decode() for m in row]
        return list(dict.fromkeys(ids))

    async def drop_identity_index(self, identity_id: str) -> None:
        """Delete an erased identity's time index and directory (its faces are erased apart)."""
        periods = await self.redis.zrange(self.keys.identity_periods(identity_id), 0, -1)
        b = Batch()
        for p in periods:
            b.add("UNLINK", self.keys.identity_index(identity_id, int(p)))
        b.add("UNLINK", self.keys.identity_periods(identity_id))
        b.add("UNLINK", self.keys.legacy_identity_faces(identity_id))
        await execute(self.redis, b, raise_errors=True)
        self._known_periods = {d for d in self._known_periods if d[0] != self.keys.identity_periods(identity_id)}

    # -- enhancement layers ------------------------------------------------------------------
    def _enh_key(self, face_id: str) -> str:
        return self.keys.enhancement(bucket_of(face_hash(face_id)), face_id)

    async def put_enhancement(self, face: FaceRecord, payload: bytes) -> bool:
        """Cache an enhancement layer for at most ``enhancement_ttl_s`` and never past the face's expiry."""
        ttl = min(self.enhancement_ttl_ms, face.capture_time_ms + self.retention_ms - now_ms())
        if ttl <= 0:
            return False
        sealed = self.sealer.seal(payload, seal_context(face.face_id, "enh"))
        await self.redis.set(self._enh_key(face.face_id), sealed, px=ttl)
        return True

    async def get_enhancement(self, face_id: str) -> bytes | None:
        raw = await self.redis.get(self._enh_key(face_id))
        return None if raw is None else self.sealer.open(raw, seal_context(face_id, "enh"))

    # -- privacy -----------------------------------------------------------------------------
    async def delete_faces(self, face_ids: list[str]) -> dict[str, list[str]]:
        """Erase records, cached layers and index entries; returns camera id -> erased face ids.

        The record becomes a tombstone (kept until the face's retention ends, with its entry in the
        all-faces index that the sweep walks) so that an edge's replay does not store it again; the
        search index hears of it through the change log.
        """
        if not face_ids:
            return {}
        by_camera: dict[str, list[str]] = {}
        b = Batch()
        ids = list(dict.fromkeys(face_ids))
        for f in ids:
            h = face_hash(f)
            b.add_keyed(self.keys.records(bucket_of(h)), "EVAL", _ERASE, 1, self.keys.records(bucket_of(h)), h, f)
            b.add("UNLINK", self._enh_key(f))
        res = await execute(self.redis, b, raise_errors=True)
        erased = [(f, face_hash(f), rec.unpack_record(old)) for f, old in zip(ids, res[0::2]) if old]
        b = Batch()
        k = self.keys
        logs: dict[str, list[bytes]] = {}
        for f, h, r in erased:
            p, matched = period_of(r.capture_ms), bool(r.identity_id)
            by_camera.setdefault(r.camera_id, []).append(f)
            b.add("ZREM", k.camera_index(r.camera_id, matched, p), f)
            b.add("HINCRBY", k.counts(p), "a", -1)
            b.add("HINCRBY", k.counts(p), f"c:{r.camera_id}", -1)
            if matched:
                b.add("ZREM", k.identity_index(r.identity_id, p), f)
                b.add("HINCRBY", k.counts(p), "m", -1)
                b.add("HINCRBY", k.counts(p), f"i:{r.identity_id}", -1)
            logs.setdefault(k.change_log(log_shard(r.camera_id)), []).append(h + r.capture_ms.to_bytes(8, "little"))
            b.add("XADD", k.events, "MAXLEN", "~", self.events_max, "*", "type", "face_deleted", "face_id", f,
                  "camera_id", r.camera_id)
        for key, items in logs.items():  # after the camera's stored entries: the index adds, then removes
            b.add("XADD", key, "*", "e", b"".join(items))
        await execute(self.redis, b, raise_errors=True)
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

    # -- the search index's change log ---------------------------------------------------------
    async def read_log(self, positions: dict[int, str], count: int = 256
                       ) -> list[tuple[int, str, list[tuple[str, bytes]]]]:
        """Change-log entries after ``positions`` (shard -> last id read, "0-0" for all): for each shard
        with new entries, (shard, last id, [(kind, value)]): "a", the 8-byte hashes of faces stored
        (one entry a batch), or "e", the hash and capture ms (8 bytes each) of faces erased."""
        b = Batch()
        for shard in range(SHARDS):
            b.add("XRANGE", self.keys.change_log(shard), f"({positions.get(shard, '0-0')}", "+", "COUNT", count)
        out = []
        for shard, entries in enumerate(await execute(self.redis, b, raise_errors=True)):
            if entries:
                items = []
                for _, fields in entries:
                    it = iter(fields)
                    items += [(kind.decode(), value) for kind, value in zip(it, it)]
                out.append((shard, entries[-1][0].decode(), items))
        return out

    async def log_heads(self) -> dict[int, str]:
        """The last id of every change-log shard ("0-0" for an empty one)."""
        b = Batch()
        for shard in range(SHARDS):
            b.add("XREVRANGE", self.keys.change_log(shard), "+", "-", "COUNT", 1)
        return {shard: (e[0][0].decode() if e else "0-0")
                for shard, e in enumerate(await execute(self.redis, b, raise_errors=True))}

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
        """Delete face records (and tombstones) past the retention period, their cached enhancement
        layers, index entries, counts and change-log entries, and older events and audit entries;
        returns how many records and tombstones were deleted.

        The all-faces index is walked by period: every face has one entry there, erased ones too.
        Periods wholly past retention are dropped key by key; in the period the cutoff falls in,
        the entries before it. Redis never expires a record by itself (records share hashes), so
        expiry is exactly this sweep, within ``FACESERVER_SWEEP_INTERVAL_S`` of the retention time.
        """
        k = self.keys
        cutoff = now_ms() - self.retention_ms
        cp = period_of(cutoff)
        identity_ids = list(identity_ids)
        cameras = [c.decode() for c in await self.redis.hkeys(k.cameras)]
        removed = 0
        for p in sorted(int(x) for x in await self.redis.zrangebyscore(k.all_periods(), "-inf", cp)):
            whole = p < cp
            upto = "+inf" if whole else f"({cutoff}"
            all_keys = [k.all_index(sh, s, p) for sh in range(SHARDS) for s in (True, False)]
            b = Batch()
            for key in all_keys:
                b.add("ZRANGEBYSCORE", key, "-inf", upto)
            rows = await execute(self.redis, b, raise_errors=True)
            ids = list(dict.fromkeys(m.decode() for row in rows for m in row))
            for i in range(0, len(ids), SWEEP_CHUNK):
                removed += await self._delete_expired(ids[i:i + SWEEP_CHUNK], cutoff, count=not whole)
            b = Batch()
            idx = all_keys + [k.camera_index(c, s, p) for c in cameras for s in (True, False)]
            idx += [k.identity_index(i, p) for i in identity_ids]
            for key in idx:
                if whole:
                    b.add("UNLINK", key)
                else:
                    b.add("ZREMRANGEBYSCORE", key, "-inf", f"({cutoff}")
            if whole:
                b.add("UNLINK", k.counts(p))
            await execute(self.redis, b, raise_errors=True)
        b = Batch()
        for state in (None, True, False):
            b.add("ZREMRANGEBYSCORE", k.all_periods(state), "-inf", f"({cp}")
            for c in cameras:
                b.add("ZREMRANGEBYSCORE", k.camera_periods(c, state), "-inf", f"({cp}")
        for i in identity_ids:
            b.add("ZREMRANGEBYSCORE", k.identity_periods(i), "-inf", f"({cp}")
        for sh in range(SHARDS):  # ids are arrival times: what arrived before the cutoff was captured before it
            b.add("XTRIM", k.change_log(sh), "MINID", max(cutoff, 0))
        b.add("XTRIM", k.events, "MINID", max(cutoff, 0))
        b.add("XTRIM", k.audit, "MINID", max(now_ms() - self.audit_retention_ms, 0))
        await execute(self.redis, b, raise_errors=True)
        self._known_periods = {d for d in self._known_periods if d[1] >= cp}
        return removed

    async def _delete_expired(self, face_ids: list[str], cutoff: int, count: bool) -> int:
        """Delete the records and tombstones of these faces that are older than ``cutoff``; with
        ``count``, take live ones off their period's counts (whole periods lose their counts at once)."""
        hashes = [face_hash(f) for f in face_ids]
        values = await self.values(hashes)
        b = Batch()
        n = 0
        for f, h, v in zip(face_ids, hashes, values):
            if v is None or rec.value_face_id(v) != f or rec.value_time(v) >= cutoff:
                continue
            n += 1
            b.add("HDEL", self.keys.records(bucket_of(h)), h)
            b.add("UNLINK", self.keys.enhancement(bucket_of(h), f))
            if count and v[0] == rec.RECORD:
                r = rec.unpack_record(v)
                ck = self.keys.counts(period_of(r.capture_ms))
                b.add("HINCRBY", ck, "a", -1)
                b.add("HINCRBY", ck, f"c:{r.camera_id}", -1)
                if r.identity_id:
                    b.add("HINCRBY", ck, "m", -1)
                    b.add("HINCRBY", ck, f"i:{r.identity_id}", -1)
        await execute(self.redis, b, raise_errors=True)
        return n

    # -- layout 1 ------------------------------------------------------------------------------
    async def migrate_legacy(self) -> int:
        """Move every face of storage layout 1 (a hash per face with a float copy of its feature) into
        this layout, with its matches, cached enhancement layer and erasure tombstones, then delete the
        old keys; returns the faces moved. Idempotent: an interrupted migration goes on at the next start."""
        k = self.keys
        moved = 0
        while True:
            raw = await self.redis.zrange(k.legacy_faces, 0, MIGRATE_CHUNK - 1)
            ids = [r.decode() for r in raw]
            if not ids:
                break
            b = Batch()
            for f in ids:
                b.add("HGETALL", k.legacy_face(f))
                b.add("GET", k.legacy_enhancement(f))
                b.add("PTTL", k.legacy_enhancement(f))
            got = await execute(self.redis, b, raise_errors=True)
            got[0::3] = [_as_dict(h) for h in got[0::3]]
            hashes = got[0::3]
            obs, matches, received = [], [], []
            for f, h in zip(ids, hashes):
                if not h:
                    continue  # expired meanwhile
                old = FaceRecord.from_legacy_hash(f, h, self.sealer)
                obs.append(Observation(f, old.camera_id, old.capture_time_ms, old.box, old.probability, old.face_size,
                                       old.fallback, old.track_id, old.base_layer, old.backend, old.model,
                                       old.step_index, np.zeros(0, np.float32)))
                matches.append(Match(old.identity_id, old.distance or 0.0, False) if old.identity_id else None)
                received.append(old.received_ms)
            if obs:  # each face keeps its own received time; no events (they were written at the time)
                faces = self._prepare(obs, matches, received)
                dirs = self._directories(faces)
                await self._store_commands(faces, dirs, events=False)
                self._known_periods.update(dirs)
            moved += len(obs)
            b = Batch()
            for f, h, v, ttl in zip(ids, hashes, got[1::3], got[2::3]):
                if h and v is not None and ttl and ttl > 0:  # sealed layers are bound to the face id: moved as they are
                    b.add("SET", self._enh_key(f), v, "PX", ttl)
                b.add("UNLINK", k.legacy_face(f))
                b.add("UNLINK", k.legacy_enhancement(f))
                b.add("ZREM", k.legacy_faces, f)
                b.add("ZREM", k.legacy_matched, f)
                if h:
                    cam, ident = h.get(b"camera", b"").decode(), h.get(b"identity", b"").decode()
                    b.add("ZREM", k.legacy_camera_faces(cam), f)
                    if ident:
                        b.add("ZREM", k.legacy_identity_faces(ident), f)
            await execute(self.redis, b, raise_errors=True)
        moved_tombs = 0
        async for key in self.redis.scan_iter(match=k.legacy_tombstone("*"), count=1000):
            f = key.decode()[len(k.legacy_tombstone("")):]
            ttl = await self.redis.pttl(key)
            if ttl and ttl > 0:  # tombstones lasted the retention period from the erasure
                t = now_ms() + ttl - self.retention_ms
                h = face_hash(f)
                await self.redis.hset(k.records(bucket_of(h)), h, rec.pack_tombstone(f, t))
                await self.redis.zadd(k.all_index(shard_of(h), False, period_of(t)), {f: t}, nx=True)
                for state in (None, False):
                    await self.redis.zadd(k.all_periods(state), {str(period_of(t)): period_of(t)})
                moved_tombs += 1
            await self.redis.unlink(key)
        for pattern in (k.legacy_camera_faces("*"), k.legacy_identity_faces("*")):
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                if await self.redis.type(key) == b"zset":
                    await self.redis.unlink(key)
        if moved or moved_tombs:
            log.info("storage layout 1 migrated: %d faces, %d erasure tombstones", moved, moved_tombs)
        return moved
