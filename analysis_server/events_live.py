"""Live events for the dashboard: the Redis events stream pushed to browsers as server-sent events.

One reader per server process follows the stream (``XREAD BLOCK`` on one Redis connection) and
hands each event to every subscriber's queue, so a hundred open dashboards cost one Redis
connection, and every replica sees the events of every camera (they all write the same stream).
A client that reconnects sends ``Last-Event-ID`` (the browser's ``EventSource`` does it by
itself) and gets what it missed from the stream first, then the live feed, without gaps or
repeats. A subscriber too slow to keep up is cut off and reconnects the same way.

Served as ``GET /events/live`` by :mod:`analysis_server.api.live_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

import redis.asyncio as aioredis

from analysis_server.gallery import Gallery

log = logging.getLogger(__name__)

EVENT_ID = re.compile(r"^\d+-\d+$")
CLOSED = object()  # put on a subscriber's queue: its stream ends


def order(event_id: str) -> tuple[int, int]:
    """Stream ids compare as (ms, sequence)."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class EventHub:
    """Follows the events stream and fans each event out to the subscribers of this process."""

    def __init__(self, redis: aioredis.Redis, stream_key: str, gallery: Gallery, queue_size: int = 512,
                 block_ms: int = 2000):
        self.redis = redis
        self.key = stream_key
        self.gallery = gallery
        self.queue_size = queue_size
        self.block_ms = block_ms
        self._subscribers: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self._started = asyncio.Event()
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def enrich(self, event_id: str, fields: dict[str, str]) -> dict:
        """An event as the dashboard shows it: the identity's current name added."""
        out: dict = {"id": event_id, **fields}
        ident = fields.get("identity_id")
        if ident:
            out["name"] = self.gallery.name(ident)
        return out

    async def subscribe(self, timeout_s: float = 10.0) -> asyncio.Queue:
        """A queue of every event added to the stream after this returns (and maybe a few before)."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._subscribers.add(q)
        if self._task is None or self._task.done():
            self._started = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._follow(self._started))
        try:
            await asyncio.wait_for(self._started.wait(), timeout_s)
        except BaseException:
            self._subscribers.discard(q)
            raise
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    async def backlog(self, after: str, count: int = 500) -> list[dict]:
        raw = await self.redis.xrange(self.key, min=f"({after}", count=count)
        return [self.enrich(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in raw]

    async def latest_id(self) -> str:
        raw = await self.redis.xrevrange(self.key, count=1)
        return raw[0][0].decode() if raw else "0-0"

    async def _follow(self, started: asyncio.Event) -> None:
        backoff = 0.2
        while True:
            try:
                last = await self.latest_id()
                break
            except Exception as e:
                log.warning("live events: reading %s failed: %r", self.key, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        started.set()
        while self._subscribers and not self._closed:
            try:
                got = await self.redis.xread({self.key: last}, count=200, block=self.block_ms)
                if got:
                    await self.gallery.refresh_if_stale()  # names of identities enrolled elsewhere
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis restarting: keep the position, try again
                log.warning("live events: reading %s failed: %r", self.key, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _, entries in got or ():
                for i, f in entries:
                    last = i.decode()
                    event = self.enrich(last, {k.decode(): v.decode() for k, v in f.items()})
                    for q in list(self._subscribers):
                        try:
                            q.put_nowait(event)
                        except asyncio.QueueFull:  # too slow: cut it off; it reconnects with Last-Event-ID
                            self._subscribers.discard(q)
                            with contextlib.suppress(asyncio.QueueEmpty):
                                q.get_nowait()
                            q.put_nowait(CLOSED)

    def close(self) -> None:
        """End every open stream (server shutdown): HTTP can then stop without waiting for them."""
        self._closed = True
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(CLOSED)
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()


def sse(event: dict) -> bytes:
    """One server-sent event: ``id``, ``event`` (the event's type) and its JSON."""
    return f"id: {event['id']}\nevent: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n".encode()
