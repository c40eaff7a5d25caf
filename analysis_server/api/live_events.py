"""``GET /events/live``: the events stream as server-sent events (what the dashboard's live view reads).

Any credentials the REST API takes work here, the dashboard's session cookie included (the
browser's ``EventSource`` cannot send headers). ``?after=<event id>`` or the ``Last-Event-ID``
header replays what came after that event first; see :mod:`analysis_server.events_live`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from analysis_server.api.deps import Caller, ServicesDep
from analysis_server.api.schemas import StreamId, is_stream_id
from analysis_server.events_live import CLOSED, EVENT_ID, TooManyStreams, order, sse

router = APIRouter(tags=["system"])


@router.get("/events/live", summary="Live events as server-sent events (observations, watchlist hits, deletions)",
            response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}},
                                                         429: {"description": "this caller has too many open"},
                                                         503: {"description": "this server has too many open"}})
async def live_events(
    request: Request,
    s: ServicesDep,
    caller: Caller,
    after: Annotated[StreamId, Query(pattern=EVENT_ID.pattern, description="replay events after this id first")] = None,
    last_event_id: Annotated[str | None, Header(description="sent by EventSource when it reconnects")] = None,
    keepalive_s: Annotated[float, Query(ge=0.5, le=60, description="comment line after this much silence")] = 15.0,
) -> StreamingResponse:
    hub = s.live
    start = last_event_id if last_event_id and is_stream_id(last_event_id) else after
    try:  # before the backlog is read, so nothing falls between the two
        queue = await hub.subscribe(caller)
    except TooManyStreams as e:
        raise HTTPException(e.status, str(e), headers={"Retry-After": "10"}) from None

    async def stream():
        sent = (0, 0)
        try:
            yield b"retry: 2000\n\n"
            if start:
                for event in await hub.backlog(start):
                    sent = order(event["id"])
                    yield sse(event)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if event is CLOSED:
                    return
                if order(event["id"]) <= sent:
                    continue
                yield sse(event)
        finally:
            hub.unsubscribe(queue)

    # The background task frees the stream's slot even when the client left before the body started.
    return StreamingResponse(stream(), media_type="text/event-stream", background=BackgroundTask(hub.unsubscribe, queue),
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
