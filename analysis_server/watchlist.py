"""Watchlist hits grouped into alerts, and their acknowledgement: one query both the REST API
(``/watchlist/hits``) and the dashboard's live view use.

Every stored face matched to a watchlist identity writes a ``watchlist_hit`` event, so a person who
stays in view (one observation per track per ``EDGE_TRACKING__INTERVAL_S``) or walks past two
cameras makes a hit every few seconds. Operators see them grouped: the hits of one identity with no
pause longer than ``FACESERVER_WATCHLIST_GAP_S`` between two of them form one group (its id: the
event id of its first hit), with how many hits, tracks and cameras, when first and last seen, and
the closest hit as its thumbnail. An operator acknowledges a group (seen, handled) or dismisses it
(a false alarm): a ``watchlist_ack`` event (who, which group, how many hits) and an audit entry; the
group is closed then, and a later hit of the same person opens a new one. Groups live in the events
stream itself (no other key): they are computed from its newest ``FACESERVER_WATCHLIST_SCAN`` events,
and they go with them (events are trimmed after ``FACESERVER_RETENTION_S``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis_server.errors import NotFound
from analysis_server.services import Services

ACTIONS = {"acknowledge": "acknowledged", "dismiss": "dismissed"}


@dataclass
class HitGroup:
    group_id: str
    identity_id: str
    first_ms: int
    last_ms: int
    best_face_id: str
    best_distance: float
    latest_face_id: str
    last_event: str
    face_ids: list[str] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    state: str = "open"
    handled_by: str | None = None
    handled_ms: int | None = None
    tracks: int = 0

    def add(self, face_id: str, camera_id: str, t: int, distance: float, event_id: str) -> None:
        self.face_ids.append(face_id)
        if camera_id not in self.cameras:
            self.cameras.append(camera_id)
        self.first_ms, self.last_ms = min(self.first_ms, t), max(self.last_ms, t)
        if t >= self.last_ms:
            self.latest_face_id = face_id
        if distance < self.best_distance:
            self.best_face_id, self.best_distance = face_id, distance
        self.last_event = event_id

    def as_dict(self, name: str | None) -> dict:
        return {"group_id": self.group_id, "identity_id": self.identity_id, "name": name, "state": self.state,
                "hits": len(self.face_ids), "tracks": self.tracks, "cameras": self.cameras,
                "first_ms": self.first_ms, "last_ms": self.last_ms, "best_face_id": self.best_face_id,
                "best_distance": self.best_distance, "latest_face_id": self.latest_face_id,
                "handled_by": self.handled_by, "handled_ms": self.handled_ms}


async def hit_groups(s: Services) -> tuple[list[HitGroup], int]:
    """Every hit group among the newest ``watchlist_scan`` events, newest (last seen) first; and how many
    events were read. Hits of faces erased since are left out."""
    raw = await s.redis.xrevrange(s.store.keys.events, count=s.settings.watchlist_scan)
    gap_ms = s.settings.watchlist_gap_s * 1000
    groups: dict[str, HitGroup] = {}
    open_by_identity: dict[str, list[HitGroup]] = {}  # groups not yet handled, newest last
    for i, f in reversed(raw):
        e = {k.decode(): v.decode() for k, v in f.items()}
        kind = e.get("type")
        if kind == "watchlist_hit" and e.get("identity_id") and e.get("face_id"):
            ident, t = e["identity_id"], int(e.get("capture_time_ms") or 0)
            distance = float(e.get("distance") or 0.0)
            # By capture time, not arrival: a replayed or late observation joins the alert it was part of.
            candidates = open_by_identity.setdefault(ident, [])
            g = next((c for c in reversed(candidates) if c.first_ms - gap_ms <= t <= c.last_ms + gap_ms), None)
            if g is None:
                g = HitGroup(i.decode(), ident, t, t, e["face_id"], distance, e["face_id"], i.decode())
                groups[g.group_id] = g
                candidates.append(g)
            g.add(e["face_id"], e.get("camera_id", ""), t, distance, i.decode())
        elif kind == "watchlist_ack" and e.get("group") in groups:
            g = groups[e["group"]]
            g.state = ACTIONS.get(e.get("action", ""), "acknowledged")
            g.handled_by, g.handled_ms = e.get("who") or None, int(i.decode().split("-")[0])
            if g in open_by_identity.get(g.identity_id, []):
                open_by_identity[g.identity_id].remove(g)
    out = list(groups.values())
    ids = list(dict.fromkeys(f for g in out for f in g.face_ids))
    records = await s.store.get_many(ids) if ids else []
    track_of = {f: (r.track_id or f) if r is not None else None for f, r in zip(ids, records)}
    kept = []
    for g in out:
        live = [f for f in g.face_ids if track_of.get(f) is not None]
        if not live:
            continue
        if len(live) < len(g.face_ids):  # some erased: the group is what is left
            if g.best_face_id not in live:
                g.best_face_id = live[0]
            if g.latest_face_id not in live:
                g.latest_face_id = live[-1]
            g.face_ids = live
        g.tracks = len({track_of[f] for f in live})
        kept.append(g)
    kept.sort(key=lambda g: g.last_ms, reverse=True)
    return kept, len(raw)


async def handle(s: Services, group_id: str, action: str, who: str) -> HitGroup:
    """Acknowledge or dismiss a hit group (:class:`NotFound` when it is not among the newest events);
    written to the events stream (every dashboard sees it) and to the audit log."""
    groups, _ = await hit_groups(s)
    group = next((g for g in groups if g.group_id == group_id), None)
    if group is None:
        raise NotFound(f"no watchlist hit group {group_id!r} among the newest {s.settings.watchlist_scan} events")
    await s.store.event("watchlist_ack", group=group_id, identity_id=group.identity_id, action=action, who=who,
                        hits=str(len(group.face_ids)))
    await s.store.audit(who, f"{action}_hits", identity_id=group.identity_id, group=group_id,
                        hits=len(group.face_ids))
    group.state, group.handled_by = ACTIONS[action], who
    return group
