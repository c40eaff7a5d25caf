"""Live events for the dashboard: the Redis events stream pushed to browsers as server-sent events.

One reader per server process follows the stream (``XREAD BLOCK`` on one Redis connection) and
hands each event to every subscriber's queue, so a hundred open dashboards cost one Redis
connection, and every replica sees the events of every camera (they all write the same stream).
A client that reconnects sends ``Last-Event-ID`` (the browser's ``EventSource`` does it by
itself) and gets what it missed from the stream first (at most ``backlog_max`` events, the newest),
then the live feed, without repeats. A subscriber too slow to keep up is cut off and reconnects
the same way.

Streams are capped: ``per_caller`` open at once for one API key (or dashboard session's key) and
``max_total`` in all, each held until its connection ends (a client that never reads keeps its
slot, and only its own), so open streams cannot starve Redis or the event loop.

Served as ``GET /events/live`` by :mod:`analysis_server.api.live_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

import redis.asyncio as aioredis

from analysis_server.errors import ServerError
from analysis_server.gallery import Gallery

log = logging.getLogger(__name__)

EVENT_ID = re.compile(r"^\d+-\d+$")
CLOSED = object()  # put on a subscriber's queue: its stream ends


def order(event_id: str) -> tuple[int, int]:
    """Stream ids compare as (ms, sequence)."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


class TooManyStreams(ServerError):
    """This caller (429) or this server (503) already has as many live event streams as allowed."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class EventHub:
    """Follows the events stream and fans each event out to the subscribers of this process."""

    def __init__(self, redis: aioredis.Redis, stream_key: str, gallery: Gallery, queue_size: int = 512,
                 block_ms: int = 2000, per_caller: int = 8, max_total: int = 64, backlog_max: int = 500,
                 base_sizes=None):
        self.redis = redis
        self.base_sizes = base_sizes  # async: face ids -> their base layers' sizes (None: gone), for the live cards
        self.key = stream_key
        self.gallery = gallery
        self.queue_size = queue_size
        self.block_ms = block_ms
        self.per_caller, self.max_total, self.backlog_max = per_caller, max_total, backlog_max
        self._subscribers: set[asyncio.Queue] = set()
        self._slots: dict[asyncio.Queue, str] = {}  # every open stream (cut off or not) -> its caller
        self._task: asyncio.Task | None = None
        self._started = asyncio.Event()
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def enrich(self, event_id: str, fields: dict[str, str]) -> dict:
        """An event as the API and the dashboard show it (:func:`typed_event`): the identity's current name added."""
        out = typed_event(event_id, fields)
        ident = out.get("identity_id")
        if ident:
            out["name"] = self.gallery.name(ident)
        return out

    async def enrich_many(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[dict]:
        """:meth:`enrich` of raw stream entries; observations also get their base layer's size (one read
        of their records for all of them), which the live view shows on each card."""
        events = [self.enrich(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in entries]
        seen = [e for e in events if e["type"] == "observation" and e.get("face_id")]
        if seen and self.base_sizes is not None:
            for e, size in zip(seen, await self.base_sizes([e["face_id"] for e in seen])):
                if size is not None:
                    e["base_layer_bytes"] = size
        return events

    async def subscribe(self, caller: str = "", timeout_s: float = 10.0) -> asyncio.Queue:
        """A queue of every event added to the stream after this returns (and maybe a few before);
        :class:`TooManyStreams` when ``caller`` or this server has no stream left."""
        if self._closed:
            raise RuntimeError("the server is shutting down")
        if sum(c == caller for c in self._slots.values()) >= self.per_caller:
            raise TooManyStreams(f"this caller already has {self.per_caller} live event streams open; close one "
                                 "(or reconnect with Last-Event-ID later)", 429)
        if len(self._slots) >= self.max_total:
            raise TooManyStreams(f"this server already serves {self.max_total} live event streams; retry later", 503)
        q: asyncio.Queue = asyncio.Queue(self.queue_size)
        self._slots[q] = caller
        self._subscribers.add(q)
        if self._task is None or self._task.done():
            self._started = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._follow(self._started))
        try:
            await asyncio.wait_for(self._started.wait(), timeout_s)
        except BaseException:
            self.unsubscribe(q)
            raise
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)
        self._slots.pop(q, None)

    async def backlog(self, after: str) -> list[dict]:
        """The events after ``after``, oldest first: at most ``backlog_max``, the newest of them (one
        bounded read; a client that missed more gets the most recent ones, then the live feed)."""
        if self.backlog_max <= 0:
            return []
        raw = await self.redis.xrevrange(self.key, min=f"({after}", count=self.backlog_max)
        return await self.enrich_many(list(reversed(raw)))

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
                try:
                    events = await self.enrich_many(entries)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # Redis went away between the two reads: the events, without sizes
                    log.warning("live events: reading base-layer sizes failed: %r", e)
                    events = [self.enrich(i.decode(), {k.decode(): v.decode() for k, v in f.items()})
                              for i, f in entries]
                for event in events:
                    last = event["id"]
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
        self._slots.clear()
        if self._task is not None:
            self._task.cancel()


_INT_FIELDS = ("capture_time_ms", "hits")
_FLOAT_FIELDS = ("distance",)


def typed_event(event_id: str, fields: dict[str, str]) -> dict:
    """An events-stream entry with its numbers as numbers and its empty values as null (the stream
    holds strings; ``analysis_server.api.schemas.EventOut`` is its schema)."""
    out: dict = {"id": event_id}
    for k, v in fields.items():
        if v == "":
            out[k] = None
        elif k in _INT_FIELDS:
            out[k] = int(v)
        elif k in _FLOAT_FIELDS:
            out[k] = float(v)
        else:
            out[k] = v
    return out


def sse(event: dict) -> bytes:
    """One server-sent event: ``id``, ``event`` (the event's type) and its JSON."""
    return f"id: {event['id']}\nevent: {event.get('type', 'message')}\ndata: {json.dumps(event)}\n\n".encode()
