"""The dashboard's pages (``/ui``): login, live view, search, gallery, one face.

Each page is rendered from the same services the REST API uses (the API's own handler
functions, called directly, so a page shows exactly what the API would answer). Pages need a
dashboard session; without one they answer 401 with the login form, which sends the operator
back to the page after login.
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from analysis_server import queries
from analysis_server.api.deps import ServicesDep
from analysis_server.api.schemas import FaceDetailOut, FaceOut, Probe, SearchIn
from analysis_server.errors import InvalidInput, NotFound
from analysis_server.face_images import reconstruction_installed
from analysis_server.services import Services
from analysis_server.sessions import COOKIE, Session, csrf_ok, fetch_site_ok
from facecodec.image_codecs import CODECS, LearnedCodec

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
RAW_CHIP_BYTES = 112 * 112 * 3  # the uncompressed RGB face both layers rebuild
PER_CAMERA = 12
HITS_SHOWN = 20
# Identities offered in a page's <select> (search by person, enrol into an existing identity), oldest
# first: a list longer than this is not one a person scrolls; past it, the Gallery page (searchable,
# paged) is the way to a person.
SELECT_IDENTITIES = 1000
EXPORT_CHUNK = 1000  # identities read from Redis per round trip while exporting the gallery
AUDIT_SCAN = 500  # a face's newest audit entries read for its page (thumbnails among them are summed up)
# The codecs an operator may pick: the learned ones are experiments (facecodec/learned.py) that code worse
# than JPEG (eval/results), so they stay off the menu; the REST API still takes them by name.
OFFERED_CODECS = sorted(name for name, c in CODECS.items() if not isinstance(c, LearnedCodec))

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

# Everything the pages load comes from this server: no inline script, no other origin, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n:,} B" if n < 10_000 else f"{n / 1024:,.1f} KiB"


templates.env.filters["iso"] = _iso
templates.env.filters["size"] = _size


class LoginRequired(Exception):
    """A page was asked for without a dashboard session: answered with the login form (401)."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def _safe_next(value: str | None) -> str:
    """Only a dashboard path on this server (no open redirect to another site)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui"


def render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


async def login_required_handler(request: Request, exc: LoginRequired) -> HTMLResponse:
    return render(request, "login.html", 401, next=exc.next_url, error=None)


async def require_session(request: Request, s: ServicesDep) -> Session:
    # A page asked for from another origin (another port of this host too) gets the login form.
    session = await s.sessions.get(request.cookies.get(COOKIE)) if fetch_site_ok(request.headers) else None
    if session is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(_safe_next(request.url.path + query))
    return session


SessionDep = Annotated[Session, Depends(require_session)]


def _page(request: Request, s: Services, session: Session, name: str, active: str, status: int = 200,
          **context) -> HTMLResponse:
    return render(request, name, status, session=session, active=active, csrf=session.csrf,
                  reconstruction=reconstruction_installed(), **context)


# -- login --------------------------------------------------------------------------------------
@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, s: ServicesDep, api_key: Annotated[str, Form(max_length=512)] = "",
                next: Annotated[str, Form(max_length=2048)] = "/ui") -> Response:
    if not fetch_site_ok(request.headers):  # a login form posted from another origin (login CSRF)
        return render(request, "login.html", 403, next="/ui", error="Log in from this dashboard's own page.")
    caller = s.credentials.api_caller(api_key.strip())
    if caller is None:
        s.metrics.auth_failures.labels("dashboard").inc()
        return render(request, "login.html", 401, next=_safe_next(next), error="That API key is not valid.")
    token, _ = await s.sessions.create(caller)
    await s.store.audit(caller, "dashboard_login")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, max_age=s.settings.session_ttl_s, httponly=True, samesite="strict",
                        secure=s.settings.session_cookie_secure or request.url.scheme == "https", path="/")
    return response


@router.post("/logout")
async def logout(request: Request, s: ServicesDep, session: SessionDep,
                 csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    if not csrf_ok(session, csrf):
        raise InvalidInput("logout needs the page's CSRF token")
    await s.sessions.delete(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- live view ----------------------------------------------------------------------------------
async def camera_rows(s: Services) -> list[dict]:
    """Known cameras; online when their stream is open on this replica or another one."""
    return [c.model_dump() for c in await queries.cameras(s)]


async def recent_faces(s: Services, camera_id: str | None = None, limit: int = PER_CAMERA) -> list[FaceOut]:
    page = await s.store.page(camera=camera_id, limit=limit)
    return [queries.face_out(s, f) for f in page.records]


@router.get("")
async def live(request: Request, s: ServicesDep, session: SessionDep) -> HTMLResponse:
    cameras = await camera_rows(s)
    recent = {c["camera_id"]: await recent_faces(s, c["camera_id"]) for c in cameras}
    groups = await queries.hit_groups(s, state="unhandled", limit=HITS_SHOWN)
    return _page(request, s, session, "live.html", "live", cameras=cameras, recent=recent,
                 groups=groups.items, gap_s=groups.gap_s, stats=await queries.stats(s),
                 last_event_id=await s.live.latest_id())


@router.get("/hits")
async def hits(request: Request, s: ServicesDep, session: SessionDep) -> HTMLResponse:
    """The live view's watchlist alerts, rendered again (the page asks after each hit or acknowledgement)."""
    groups = await queries.hit_groups(s, state="unhandled", limit=HITS_SHOWN)
    return render(request, "_hits.html", groups=groups.items, reconstruction=reconstruction_installed())


# -- search -------------------------------------------------------------------------------------
def _opt_id(value: str | None, what: str) -> str | None:
    if not value:
        return None
    if not ID.match(value):
        raise InvalidInput(f"{what} {value[:40]!r} is not a valid id")
    return value


def _opt_int(value: str | None, what: str) -> int | None:
    if not value:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        raise InvalidInput(f"{what} must be a time in milliseconds") from None


PAGE = 100
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


async def _search_page(s: Services, form: dict, cursor: str | None, offset: int, limit: int = PAGE) -> dict:
    """One page of the search form's result: a search by person or face (ranked by distance, paged by
    offset), or the faces of the camera and time range (newest first, paged by cursor)."""
    ident, probe_face = _opt_id(form["identity"], "identity"), _opt_id(form["face"], "face")
    cam = _opt_id(form["camera"], "camera")
    since, until = _opt_int(form["since_ms"], "since"), _opt_int(form["until_ms"], "until")
    thr = float(form["threshold"]) if form["threshold"] else None
    if ident or probe_face:
        probe = Probe(identity_id=ident) if ident else Probe(face_id=probe_face)
        out = await queries.search(s, SearchIn(probe=probe, camera_ids=[cam] if cam else None, since_ms=since,
                                               until_ms=until, threshold=thr, limit=limit, offset=offset))
        records = await s.store.get_many([h.face_id for h in out.hits])
        return {"results": [queries.face_out(s, f) for f in records if f is not None],
                "distances": {h.face_id: h.distance for h in out.hits}, "scanned": out.scanned,
                "next": {"offset": out.next_offset} if out.next_offset is not None else None}
    page = await queries.faces_page(s, camera=cam, since_ms=since, until_ms=until, cursor=cursor, limit=limit)
    return {"results": page.items, "distances": {}, "scanned": None,
            "next": {"cursor": page.next_cursor} if page.next_cursor else None}


def _form(identity, face, camera, since_ms, until_ms, threshold) -> dict:
    return {"identity": identity or "", "face": face or "", "camera": camera or "", "since_ms": since_ms or "",
            "until_ms": until_ms or "", "threshold": threshold or ""}


@router.get("/search")
async def search(request: Request, s: ServicesDep, session: SessionDep, identity: str | None = None,
                 face: str | None = None, camera: str | None = None, since_ms: str | None = None,
                 until_ms: str | None = None, threshold: str | None = None, cursor: str | None = None,
                 offset: int = 0) -> HTMLResponse:
    error, got, searched = None, {"results": [], "distances": {}, "scanned": None, "next": None}, False
    identities, _ = await s.gallery.list(0, SELECT_IDENTITIES)
    cameras = await camera_rows(s)
    form = _form(identity, face, camera, since_ms, until_ms, threshold)
    query = {k: v for k, v in form.items() if v}
    try:
        got = await _search_page(s, form, cursor, max(0, min(offset, 10_000)))
        searched = True
    except (InvalidInput, NotFound, ValueError) as e:
        error = str(e)
    next_url = f"/ui/search?{urlencode({**query, **got['next']})}" if got["next"] else None
    return _page(request, s, session, "search.html", "search", identities=identities, cameras=cameras,
                 form=form, results=got["results"], distances=got["distances"], scanned=got["scanned"], error=error,
                 searched=searched, next_url=next_url, first_url=f"/ui/search?{urlencode(query)}" if
                 (cursor or offset) else None, export_query=urlencode(query), status=422 if error else 200)


def _rows_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            # a value a spreadsheet would run as a formula is quoted as text
            w.writerow({k: f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
                        for k, v in r.items()})
    return buf.getvalue()


def _export(rows: list[dict], fmt: str, name: str, truncated: bool) -> Response:
    body = _rows_csv(rows) if fmt == "csv" else json.dumps({"items": rows, "truncated": truncated}, indent=1)
    return Response(body, media_type=EXPORT_FORMATS[fmt], headers={
        **SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
        "X-Export-Rows": str(len(rows)), "X-Export-Truncated": "true" if truncated else "false"})


@router.get("/search/export")
async def search_export(s: ServicesDep, session: SessionDep, format: str = "csv", identity: str | None = None,
                        face: str | None = None, camera: str | None = None, since_ms: str | None = None,
                        until_ms: str | None = None, threshold: str | None = None) -> Response:
    """The whole result of the search form (every page), as CSV or JSON: metadata only, no picture."""
    if format not in EXPORT_FORMATS:
        raise InvalidInput("format is csv or json")
    form = _form(identity, face, camera, since_ms, until_ms, threshold)
    cap = s.settings.scan_max
    rows: list[dict] = []
    cursor, offset = None, 0
    while True:
        got = await _search_page(s, form, cursor, offset, limit=500 if not (identity or face) else 1000)
        for f in got["results"]:
            rows.append({"face_id": f.face_id, "camera_id": f.camera_id, "capture_time_ms": f.capture_time_ms,
                         "capture_time": _iso(f.capture_time_ms), "distance": got["distances"].get(f.face_id),
                         "identity_id": f.match.identity_id if f.match else None,
                         "name": f.match.name if f.match else None,
                         "match_distance": f.match.distance if f.match else None, "track_id": f.track_id,
                         "base_layer_bytes": f.base_layer_bytes})
        nxt = got["next"]
        if nxt is None or len(rows) >= cap or (nxt.get("offset") or 0) > 10_000 - 1000:
            break
        cursor, offset = nxt.get("cursor"), nxt.get("offset") or 0
    await s.store.audit(session.caller, "export_faces", faces=min(len(rows), cap))
    return _export(rows[:cap], format, "faces", nxt is not None)


# -- gallery ------------------------------------------------------------------------------------
@router.get("/gallery")
async def gallery(request: Request, s: ServicesDep, session: SessionDep, offset: int = 0) -> HTMLResponse:
    offset = max(0, offset)
    identities, total = await s.gallery.list(offset, PAGE)
    matched = await s.store.identity_counts([i.identity_id for i in identities])
    return _page(request, s, session, "gallery.html", "gallery", identities=identities, total=total, matched=matched,
                 offset=offset, next_url=f"/ui/gallery?offset={offset + PAGE}" if offset + PAGE < total else None,
                 prev_url=f"/ui/gallery?offset={max(0, offset - PAGE)}" if offset else None)


@router.get("/gallery/export")
async def gallery_export(s: ServicesDep, session: SessionDep, format: str = "csv") -> Response:
    """Every enrolled identity (name, watchlist, features, faces matched, dates), as CSV or JSON."""
    if format not in EXPORT_FORMATS:
        raise InvalidInput("format is csv or json")
    rows: list[dict] = []
    offset = 0
    while True:
        identities, total = await s.gallery.list(offset, EXPORT_CHUNK)
        counts = await s.store.identity_counts([i.identity_id for i in identities])
        rows += [{"identity_id": i.identity_id, "name": i.name, "watchlist": i.watchlist,
                  "features": len(i.feature_ids), "faces_matched": counts.get(i.identity_id, 0),
                  "created_ms": i.created_ms, "created": _iso(i.created_ms), "updated_ms": i.updated_ms}
                 for i in identities]
        offset += EXPORT_CHUNK
        if offset >= total or not identities:
            break
    await s.store.audit(session.caller, "export_identities", faces=len(rows))
    return _export(rows, format, "identities", False)


# -- one face -----------------------------------------------------------------------------------
@router.get("/faces/{face_id}")
async def face(face_id: str, request: Request, s: ServicesDep, session: SessionDep) -> HTMLResponse:
    record = await s.store.get(face_id) if ID.match(face_id) else None
    if record is None:
        return _page(request, s, session, "missing.html", "", status=404, face_id=face_id[:128])
    enh = await s.store.get_enhancement(face_id)
    detail = queries.face_out(s, record, FaceDetailOut, enhancement_cached=enh is not None,
                                enhancement_layer_bytes=len(enh) if enh is not None else None)
    identities, _ = await s.gallery.list(0, SELECT_IDENTITIES)
    watchlist = False
    if detail.match:
        with contextlib.suppress(NotFound):  # deleted since the face was matched
            watchlist = (await s.gallery.get(detail.match.identity_id)).watchlist
    session_link = s.link.session(record.camera_id)
    online = session_link is not None or bool(await s.router.owner(record.camera_id))
    return _page(request, s, session, "face.html", "", face=detail, identities=identities, watchlist=watchlist,
                 codecs=OFFERED_CODECS, raw_bytes=RAW_CHIP_BYTES, camera_online=online, quoted_id=quote(face_id),
                 **await face_audit_context(s, face_id))


async def face_audit_context(s: Services, face_id: str) -> dict:
    """A face's audit trail as its page shows it: deliberate actions one per row (newest 50), the
    thumbnails shown in lists summed up in one line (how many, by whom, when last)."""
    entries = [queries.audit_out(e) for e in await s.store.audit_entries(AUDIT_SCAN, face_id)] \
        if ID.match(face_id) else []
    thumbs = [e for e in entries if e.action == "thumbnail"]
    summary = {"count": len(thumbs), "last_ms": thumbs[0].time_ms, "who": sorted({e.who for e in thumbs})} \
        if thumbs else None
    return {"audit": [e for e in entries if e.action != "thumbnail"][:50], "thumbnails": summary}


@router.get("/faces/{face_id}/audit")
async def face_audit(face_id: str, request: Request, s: ServicesDep, session: SessionDep) -> HTMLResponse:
    return render(request, "_audit.html", **await face_audit_context(s, face_id))


# -- API documentation -----------------------------------------------------------------------------
@router.get("/docs")
async def api_docs(request: Request, s: ServicesDep, session: SessionDep) -> HTMLResponse:
    """The OpenAPI document as a page with a form per operation (sent with the session: "try it")."""
    doc = request.app.openapi()
    operations = [{"method": m.upper(), "path": path, **op} for path, ops in doc["paths"].items()
                  for m, op in ops.items()]
    return _page(request, s, session, "docs.html", "docs", operations=operations, schemas=doc["components"]["schemas"],
                 info=doc["info"])
