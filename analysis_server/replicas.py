"""Several server replicas sharing one Redis: which replica holds a camera's stream, and requests
routed to that replica through Redis pub/sub.

A camera's gRPC stream lands on one replica (the load balancer picks it). That replica writes
``cam:{camera}:owner = <replica id>`` with a TTL of ``owner_ttl_s``, refreshed while the stream
is open, and listens on its own channel ``replica:{replica id}``. The key is taken only when it is
free, already ours, or its replica is gone or says it no longer holds the stream: a camera
streams to one replica at a time (a second stream is refused, see :mod:`analysis_server.edge_link`). A replica asked for a face's
enhancement layer whose camera streams elsewhere publishes the request on the owner's channel;
the owner puts it on the stream and publishes the answer (the upload, or why there is none) on
the asker's channel. Texture drops for a camera held elsewhere are written to Redis first (the
pending-drops set) and the owner is told to send them, so nothing is lost if it is gone.

Messages are JSON: ``{"t": "req", "op", "rid", "reply", "body"}`` and ``{"t": "rep", "rid", "body"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from analysis_server.keys import Keys

log = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[dict]]

# KEYS[1] owner key; ARGV: replica id, ttl ms, the holder to take over from ("" = none). Returns "" when
# the key is now ours, else the replica id that holds it.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or (ARGV[3] ~= '' and v == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
return v
"""
# KEYS[1] owner key; ARGV: replica id, ttl ms. Keep (or take back after expiry) only what is ours.
_REFRESH = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NoOwner(Exception):
    """No live replica holds the camera's stream (the message says which case)."""


class ReplicaRouter:
    """Camera ownership in Redis and request/reply between replicas over pub/sub."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, replica_id: str = "", owner_ttl_s: float = 30.0):
        self.redis = redis
        self.keys = keys
        self.replica_id = replica_id or secrets.token_hex(6)
        self.owner_ttl_ms = int(owner_ttl_s * 1000)
        self.channel = keys.replica_channel(self.replica_id)
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._owned: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._subscribed = asyncio.Event()
        self._claim = redis.register_script(_CLAIM)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self.on_lost: Callable[[str], None] | None = None  # called with a camera another replica took

    def handle(self, op: str, handler: Handler) -> None:
        """Serve requests ``op`` from other replicas: ``handler(body) -> reply body``."""
        self._handlers[op] = handler

    # -- lifetime ----------------------------------------------------------------------------
    async def start(self, timeout_s: float = 10.0) -> None:
        self._spawn(self._listen())
        self._spawn(self._refresh_forever())
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        log.info("replica %s listening on %s", self.replica_id, self.channel)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        for camera in list(self._owned):
            try:
                await self._release(keys=[self.keys.camera_owner(camera)], args=[self.replica_id])
            except Exception as e:  # Redis may already be gone; the key expires anyway
                log.debug("could not release camera %s: %r", camera, e)
        self._owned.clear()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- ownership ---------------------------------------------------------------------------
    async def claim(self, camera_id: str, ask_timeout_s: float = 2.0) -> str | None:
        """Record that this replica holds ``camera_id``'s stream: ``None``, or the id of the live
        replica that holds it already (the new stream must be refused).

        A key naming another replica is taken over only when that replica is gone (nobody listens
        on its channel) or answers that it no longer holds the stream. When Redis cannot be
        reached the stream is accepted (it cannot store anything until Redis is back anyway) and
        the key is written by the next refresh.
        """
        key = self.keys.camera_owner(camera_id)
        try:
            holder = (await self._claim(keys=[key], args=[self.replica_id, self.owner_ttl_ms, ""])).decode()
            if holder and await self._lets_go(holder, camera_id, ask_timeout_s):
                holder = (await self._claim(keys=[key], args=[self.replica_id, self.owner_ttl_ms, holder])).decode()
        except Exception as e:  # refreshed again within owner_ttl_s / 3
            log.warning("could not record that this replica holds camera %s: %r", camera_id, e)
            holder = ""
        if holder:
            return holder
        self._owned.add(camera_id)
        return None

    async def _lets_go(self, holder: str, camera_id: str, timeout_s: float) -> bool:
        """Whether replica ``holder`` (named in the camera's owner key) no longer holds its stream."""
        try:
            reply = await self._call_replica(holder, "holds", {"camera_id": camera_id}, timeout_s)
        except NoOwner:
            return True  # no replica listens on its channel: it is gone
        except Exception as e:  # alive but slow, or Redis trouble: keep the camera where it is
            log.info("replica %s did not say whether it holds camera %s: %r", holder, camera_id, e)
            return False
        return not reply.get("holds", True)

    def release(self, camera_id: str) -> None:
        """The stream closed: forget ownership (only if no other replica took the camera since)."""
        self._owned.discard(camera_id)
        self._spawn(self._release_owner(camera_id))

    async def _release_owner(self, camera_id: str) -> None:
        if camera_id in self._owned:  # it reconnected here meanwhile
            return
        try:
            await self._release(keys=[self.keys.camera_owner(camera_id)], args=[self.replica_id])
        except Exception as e:
            log.warning("could not release camera %s: %r", camera_id, e)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.owner_ttl_ms / 3000)
            for camera in list(self._owned):
                try:
                    kept = await self._refresh(keys=[self.keys.camera_owner(camera)],
                                               args=[self.replica_id, self.owner_ttl_ms])
                except Exception as e:
                    log.warning("could not refresh ownership of camera %s: %r", camera, e)
                    continue
                if not kept and camera in self._owned:
                    log.warning("camera %s: another replica took its owner key; closing the stream here", camera)
                    self._owned.discard(camera)
                    if self.on_lost is not None:
                        self.on_lost(camera)

    async def owner(self, camera_id: str) -> str | None:
        raw = await self.redis.get(self.keys.camera_owner(camera_id))
        return raw.decode() if raw else None

    async def owners(self, camera_ids: list[str]) -> dict[str, str]:
        """camera id -> replica id, for the cameras whose stream is open on some replica."""
        if not camera_ids:
            return {}
        raw = await self.redis.mget([self.keys.camera_owner(c) for c in camera_ids])
        return {c: r.decode() for c, r in zip(camera_ids, raw) if r}

    # -- request / reply ---------------------------------------------------------------------
    async def call(self, camera_id: str, op: str, body: dict, timeout_s: float) -> dict:
        """Send ``op`` to the replica holding ``camera_id`` and wait for its reply body.

        Raises :class:`NoOwner` when no other live replica holds the camera and
        ``asyncio.TimeoutError`` when no reply comes within ``timeout_s``.
        """
        owner = await self.owner(camera_id)
        if owner is None or owner == self.replica_id:
            raise NoOwner(f"camera {camera_id!r} is offline (no open stream on any server replica)")
        try:
            return await self._call_replica(owner, op, body, timeout_s)
        except NoOwner:
            raise NoOwner(f"camera {camera_id!r} is offline: replica {owner!r}, which held its stream, "
                          "is gone") from None

    async def _call_replica(self, owner: str, op: str, body: dict, timeout_s: float) -> dict:
        """``op`` on replica ``owner`` and its reply body; :class:`NoOwner` when nobody listens there."""
        rid = secrets.token_hex(12)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            msg = json.dumps({"t": "req", "op": op, "rid": rid, "reply": self.replica_id, "body": body})
            if await self.redis.publish(self.keys.replica_channel(owner), msg) == 0:
                raise NoOwner(f"replica {owner!r} is gone")
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(rid, None)

    async def notify(self, camera_id: str, op: str, body: dict) -> bool:
        """Fire-and-forget ``op`` to the replica holding ``camera_id``; whether one received it."""
        owner = await self.owner(camera_id)
        if owner is None or owner == self.replica_id:
            return False
        msg = json.dumps({"t": "req", "op": op, "rid": "", "reply": "", "body": body})
        return await self.redis.publish(self.keys.replica_channel(owner), msg) > 0

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            ps = self.redis.pubsub()
            try:
                await ps.subscribe(self.channel)
                self._subscribed.set()
                backoff = 0.1
                async for msg in ps.listen():
                    if msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarted or the connection dropped: subscribe again
                log.warning("replica channel %s: %r; subscribing again in %.1f s", self.channel, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await asyncio.shield(ps.aclose())
                except Exception:  # closing a broken connection
                    pass

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            kind = msg["t"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed message on %s", self.channel)
            return
        if kind == "rep":
            fut = self._pending.get(msg.get("rid", ""))
            if fut is not None and not fut.done():
                fut.set_result(msg.get("body") or {})
        elif kind == "req":
            self._spawn(self._serve(msg))

    async def _serve(self, msg: dict) -> None:
        handler = self._handlers.get(msg.get("op", ""))
        if handler is None:
            body = {"error": "EdgeFailed", "message": f"replica {self.replica_id} cannot serve {msg.get('op')!r}"}
        else:
            try:
                body = await handler(msg.get("body") or {})
            except Exception as e:
                log.exception("request %s from replica %s failed", msg.get("op"), msg.get("reply"))
                body = {"error": type(e).__name__, "message": str(e)}
        if msg.get("reply") and msg.get("rid"):
            reply = json.dumps({"t": "rep", "rid": msg["rid"], "body": body})
            try:
                await self.redis.publish(self.keys.replica_channel(msg["reply"]), reply)
            except Exception as e:
                log.warning("could not reply to replica %s: %r", msg["reply"], e)
