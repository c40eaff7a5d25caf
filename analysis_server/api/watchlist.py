"""``/watchlist/hits``: watchlist hits grouped into alerts, acknowledged or dismissed by operators
(:mod:`analysis_server.watchlist`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from analysis_server import queries, watchlist
from analysis_server.api.deps import Caller, ServicesDep
from analysis_server.api.schemas import HitGroupOut, HitGroupPageOut

router = APIRouter(prefix="/watchlist", tags=["watchlist"])
GroupId = Annotated[str, Path(pattern=r"^\d{1,20}-\d{1,20}$", description="the group's id (its first hit's event id)")]


@router.get("/hits", response_model=HitGroupPageOut, summary="Watchlist hits grouped by identity (and time), newest first")
async def hit_groups(
    s: ServicesDep,
    state: Annotated[Literal["open", "unhandled", "all"], Query(
        description="open: not yet handled; unhandled: open and acknowledged (what the live view shows: "
                    "everything but dismissed); all")] = "unhandled",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> HitGroupPageOut:
    return await queries.hit_groups(s, state, limit)


@router.post("/hits/{group_id}/acknowledge", response_model=HitGroupOut, summary="Acknowledge a hit group (audited)",
             responses={404: {"description": "no such group among the newest events"}})
async def acknowledge(group_id: GroupId, s: ServicesDep, caller: Caller) -> HitGroupOut:
    return queries.group_out(s, await watchlist.handle(s, group_id, "acknowledge", caller))


@router.post("/hits/{group_id}/dismiss", response_model=HitGroupOut,
             summary="Dismiss a hit group as a false alarm (audited); the live view hides it",
             responses={404: {"description": "no such group among the newest events"}})
async def dismiss(group_id: GroupId, s: ServicesDep, caller: Caller) -> HitGroupOut:
    return queries.group_out(s, await watchlist.handle(s, group_id, "dismiss", caller))
