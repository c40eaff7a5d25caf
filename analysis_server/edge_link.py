"""The server's side of the open camera streams: who is online, and requests sent down to the edge.

An operator's ``layer=full`` request becomes an ``EnhancementRequest`` on the stream of the
camera that holds the face; the edge answers with an ``EnhancementUpload`` carrying the same
``request_id``, which resolves the waiting request. Requests for the same face, codec and
quality that are already in flight share one round trip.

With several server replicas sharing one Redis, a camera's stream is open on one of them: a
request for a camera held elsewhere is forwarded to that replica through Redis pub/sub
(:class:`analysis_server.replicas.ReplicaRouter`) behind this same interface, and the upload
comes back the same way.

One camera, one stream: while a camera's stream is open (here or on another replica), a second
stream claiming the same camera id is refused (:meth:`EdgeLink.attach` says why), so requests and
texture drops always reach the edge that holds the stream, and the camera is never shown offline
while that edge is connected. A stream whose connection died without a word is closed by gRPC's
keepalive (``KEEPALIVE_S`` in :mod:`analysis_server.grpc_service`), after which the camera can
connect again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from dataclasses import dataclass, field

from analysis_server.errors import (EdgeFailed, EdgeOffline, EdgeTimeout, LayerUnsupported, ServerError, from_remote,
                                    is_remote, to_remote)
from analysis_server.replicas import NoOwner, ReplicaRouter
from analysis_server.store import now_ms
from facewire.v1 import ingest_pb2 as pb

log = logging.getLogger(__name__)


EVICTED = object()  # put on a session's outbound queue: its stream must end (another replica holds the camera)
FACE, CONTEXT = "face", "context"  # the layers an edge holds: the face's texture, the frame around it


@dataclass(frozen=True)
class LayerRequest:
    """A request for a layer other than the face's enhancement layer (which travels as a v1
    ``EnhancementRequest``), put on the outbound queue of a stream that announced it can serve it;
    :func:`analysis_server.grpc_v2.to_v2` writes it on the wire."""

    request_id: str
    face_id: str
    layer: str


# A forwarded request waits this much longer than the owner replica waits for its edge: the owner's
# own answer (the upload, or its EdgeTimeout naming the camera) crosses Redis pub/sub twice and must
# arrive before this side gives up with a vaguer one. Two hops on a loaded Redis take milliseconds;
# 2 s leaves room for a stalled event loop on the owner.
FORWARD_MARGIN_S = 2.0

# Messages waiting to go to one edge (acks, enhancement and layer requests, texture drops). Acks
# follow the batches a stream sends (a few in flight) and requests come from people and the drop
# loop, so a healthy stream holds a handful; a full queue means the edge stopped reading, and
# `send` then waits (backpressure on the handlers writing to that stream alone) instead of memory
# growing without bound: 1,024 messages of at most a few hundred bytes each.
OUTBOUND_MAX = 1024


@dataclass(eq=False)
class CameraSession:
    """One open stream; messages for the edge go through ``outbound`` (a single writer sends them)."""

    camera_id: str
    peer: str
    connected_ms: int = field(default_factory=now_ms)
    agent_version: str = ""
    outbound: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=OUTBOUND_MAX))
    closed: bool = False
    evicted: bool = False
    wire: object = None  # facewire.v2 streams: what their Hello fixed (analysis_server.grpc_v2.StreamState)
    requested: dict[str, str] = field(default_factory=dict)  # facewire.v2: request id -> face id, until answered
    layers: frozenset = frozenset({FACE})  # the layers its edge can serve (facewire.v2 Hello's `layers`)

    async def send(self, msg: pb.ServerMessage) -> None:
        await self.outbound.put(msg)

    def evict(self) -> None:
        """End this stream: its writer stops at the next message (:data:`EVICTED` wakes it if the
        queue is idle) and closes the call; the edge reconnects."""
        self.evicted = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the writer anyway
            self.outbound.put_nowait(EVICTED)


class EdgeLink:
    """Open sessions by camera id and enhancement requests waiting for their upload."""

    def __init__(self, router: ReplicaRouter | None = None) -> None:
        self._sessions: dict[str, CameraSession] = {}
        self._claiming: dict[str, CameraSession] = {}  # streams whose ownership is being recorded in Redis
        self._pending: dict[str, tuple[asyncio.Future, str, str]] = {}  # request id -> (future, camera, face)
        self._inflight: dict[tuple[str, str, int], asyncio.Future] = {}
        self.router = router
        if router is not None:
            router.handle("enhance", self._serve_forwarded)
            router.handle("holds", self._serve_holds)
            router.on_lost = self.evict

    # -- sessions ----------------------------------------------------------------------------
    async def attach(self, session: CameraSession) -> str | None:
        """Register a new stream: ``None``, or why it is refused (the camera already has a live stream,
        on this replica or another one)."""
        camera_id = session.camera_id
        current = self._sessions.get(camera_id) or self._claiming.get(camera_id)
        if current is not None and not current.closed:
            return (f"camera {camera_id!r} already has a live stream (opened at {current.connected_ms} ms); "
                    "a camera id streams once at a time")
        self._claiming[camera_id] = session  # before any await: a concurrent attach sees it
        try:
            holder = await self.router.claim(camera_id) if self.router is not None else None
        finally:
            del self._claiming[camera_id]
        if holder is not None:
            return (f"camera {camera_id!r} already has a live stream on server replica {holder!r}; "
                    "a camera id streams once at a time")
        self._sessions[camera_id] = session
        return None

    def detach(self, session: CameraSession) -> None:
        session.closed = True
        if self._sessions.get(session.camera_id) is session:
            del self._sessions[session.camera_id]
            self._fail_camera(session.camera_id)
            if self.router is not None:
                self.router.release(session.camera_id)

    def session(self, camera_id: str) -> CameraSession | None:
        return self._sessions.get(camera_id)

    def evict(self, camera_id: str) -> None:
        """Close the camera's stream here (another replica took the camera while Redis lost our claim)."""
        session = self._sessions.get(camera_id)
        if session is not None:
            log.warning("camera %s: another server replica holds its stream now; closing the one here", camera_id)
            session.evict()

    def online(self) -> dict[str, CameraSession]:
        return dict(self._sessions)

    async def _serve_holds(self, body: dict) -> dict:
        """Another replica asks whether the stream of a camera is still open here."""
        session = self._sessions.get(str(body.get("camera_id", "")))
        return {"holds": session is not None and not session.closed}

    # -- enhancement round trip --------------------------------------------------------------
    async def request_enhancement(self, camera_id: str, face_id: str, codec: str, quality: int,
                                  timeout_s: float, forward: bool = True, layer: str = FACE) -> pb.EnhancementUpload:
        """Ask the edge for a face's enhancement layer (or, with ``layer``, another layer it holds: its
        context picture) and wait for its upload (any status).

        A camera whose stream is open on another replica is asked through that replica (unless
        ``forward`` is false). Raises :class:`EdgeOffline` when the camera has no stream anywhere
        (or loses it while we wait), :class:`EdgeTimeout` when no upload comes within ``timeout_s``
        and :class:`LayerUnsupported` when the camera's edge cannot serve ``layer`` (asked nothing).
        """
        key = (face_id, codec, quality, layer)
        shared = self._inflight.get(key)
        if shared is not None:
            return await self._wait(shared, camera_id, face_id, timeout_s)
        session = self._sessions.get(camera_id)
        if session is None and self.router is not None and forward:
            return await self._forward(key, camera_id, face_id, codec, quality, timeout_s, layer)
        if session is None:
            raise EdgeOffline(f"camera {camera_id!r}, which holds the {layer} layer of face {face_id!r}, "
                              "is offline (no open stream)")
        if layer not in session.layers:
            raise LayerUnsupported(f"the edge of camera {camera_id!r} (agent {session.agent_version or 'unknown'}, "
                                   f"{'facewire.v2' if session.wire is not None else 'facewire.v1'}) cannot serve the "
                                   f"{layer} layer; upgrade it to an agent that keeps context pictures")
        request_id = secrets.token_hex(12)
        fut = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (fut, camera_id, face_id)
        self._inflight[key] = fut
        try:
            if layer == FACE:
                req = pb.EnhancementRequest(request_id=request_id, face_id=face_id, codec=codec, quality=quality)
                msg = pb.ServerMessage(enhancement_request=req)
            else:
                msg = LayerRequest(request_id, face_id, layer)
            # One deadline for both steps: queueing the request (a stream that stopped reading has a
            # full queue) and the upload, so the caller waits timeout_s in all, not twice.
            deadline = asyncio.get_running_loop().time() + timeout_s
            await asyncio.wait_for(session.send(msg), timeout_s)
            return await self._wait(fut, camera_id, face_id, max(0.0, deadline - asyncio.get_running_loop().time()),
                                    timeout_s)
        finally:
            self._pending.pop(request_id, None)
            if self._inflight.get(key) is fut:
                del self._inflight[key]
            if not fut.done():
                fut.set_exception(EdgeTimeout(f"camera {camera_id!r} did not upload the enhancement layer of "
                                              f"face {face_id!r} within {timeout_s:g} s"))
                fut.exception()  # retrieved here; requests sharing it re-raise it

    async def _forward(self, key: tuple[str, str, int, str], camera_id: str, face_id: str, codec: str, quality: int,
                       timeout_s: float, layer: str = FACE) -> pb.EnhancementUpload:
        """The round trip through the replica that holds the camera's stream (shared like a local one)."""
        assert self.router is not None
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            body = {"camera_id": camera_id, "face_id": face_id, "codec": codec, "quality": quality,
                    "timeout_s": timeout_s, "layer": layer}
            try:
                reply = await self.router.call(camera_id, "enhance", body, timeout_s + FORWARD_MARGIN_S)
            except NoOwner as e:
                raise EdgeOffline(f"{e}; it holds the enhancement layer of face {face_id!r}") from None
            except TimeoutError:
                raise EdgeTimeout(f"camera {camera_id!r} (streaming to another server replica) did not upload the "
                                  f"enhancement layer of face {face_id!r} within {timeout_s:g} s") from None
            upload = _upload_from_reply(reply)
            fut.set_result(upload)
            return upload
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e if isinstance(e, ServerError) else
                                  EdgeFailed(f"the enhancement request for face {face_id!r} was interrupted"))
                fut.exception()
            raise
        finally:
            if self._inflight.get(key) is fut:
                del self._inflight[key]

    async def _serve_forwarded(self, body: dict) -> dict:
        """Another replica's request for a camera whose stream is open here."""
        try:
            upload = await self.request_enhancement(str(body["camera_id"]), str(body["face_id"]), str(body["codec"]),
                                                    int(body["quality"]), float(body["timeout_s"]), forward=False,
                                                    layer=str(body.get("layer", FACE)))
        except ServerError as e:
            if not is_remote(e):
                raise
            return to_remote(e)
        return {"upload": base64.b64encode(upload.SerializeToString()).decode()}

    @staticmethod
    async def _wait(fut: asyncio.Future, camera_id: str, face_id: str, timeout_s: float,
                    asked_s: float | None = None) -> pb.EnhancementUpload:
        """The upload ``fut`` brings, waited for ``timeout_s`` (what is left of the ``asked_s`` the caller gave)."""
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            raise EdgeTimeout(f"camera {camera_id!r} did not upload the enhancement layer of face {face_id!r} "
                              f"within {asked_s or timeout_s:g} s") from None

    def _fail_camera(self, camera_id: str) -> None:
        for fut, cam, _ in list(self._pending.values()):
            if cam == camera_id and not fut.done():
                fut.set_exception(EdgeOffline(f"camera {camera_id!r} disconnected before uploading the "
                                              "enhancement layer"))
                fut.exception()

    def deliver(self, upload: pb.EnhancementUpload, camera_id: str) -> bool:
        """Resolve the request this upload answers.

        ``False`` when nobody waits for it (late, unknown) or when it comes from another camera
        or names another face than the request did: a camera cannot answer for another one.
        """
        pending = self._pending.get(upload.request_id)
        if pending is None:
            return False
        fut, cam, face_id = pending
        if cam != camera_id or upload.face_id != face_id or fut.done():
            return False
        del self._pending[upload.request_id]
        fut.set_result(upload)
        return True

    async def drop_texture(self, camera_id: str, face_ids: list[str], timeout_s: float) -> bool:
        """Tell the camera's edge (streaming to this replica) to drop these faces' texture, and whether
        it confirmed that it no longer holds them; ``False`` when it is offline or did not confirm.

        The wire contract (``facewire.v1``) has no acknowledgement of ``DropTexture``, so the
        confirmation is a question the edge already answers: right after the drop, an
        ``EnhancementRequest`` for the last face of the batch. An edge reads its stream in order
        and drops a batch in one transaction, so ``EXPIRED`` ("dropped at the server's request")
        or ``UNKNOWN_FACE`` means the whole batch is gone; an upload (``OK``) means it is not.
        """
        if not face_ids or self._sessions.get(camera_id) is None:
            return False
        session = self._sessions[camera_id]
        await asyncio.wait_for(session.send(pb.ServerMessage(drop_texture=pb.DropTexture(face_ids=face_ids))),
                               timeout_s)
        try:
            answer = await self.request_enhancement(camera_id, face_ids[-1], "", 0, timeout_s, forward=False)
        except (EdgeOffline, EdgeTimeout, EdgeFailed) as e:
            log.info("camera %s did not confirm the drop of %d textures: %s", camera_id, len(face_ids), e)
            return False
        if answer.status in (pb.UPLOAD_STATUS_EXPIRED, pb.UPLOAD_STATUS_UNKNOWN_FACE):
            return True
        log.warning("camera %s still holds the texture of face %s after a drop (%s); it is sent again later",
                    camera_id, face_ids[-1], pb.UploadStatus.Name(answer.status))
        return False


def _upload_from_reply(reply: dict) -> pb.EnhancementUpload:
    """The upload a replica sent back, or the error it reported, raised as ours."""
    if "upload" in reply:
        try:
            return pb.EnhancementUpload.FromString(base64.b64decode(reply["upload"]))
        except Exception as e:  # a corrupt reply is the other replica's failure, reported as such
            raise EdgeFailed(f"another server replica sent an unreadable enhancement upload: {e!r}") from None
    raise from_remote(reply, "another server replica could not fetch the enhancement layer")
