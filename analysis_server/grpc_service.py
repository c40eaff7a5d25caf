"""The gRPC side: ``FaceIngest.Stream`` (one bidirectional stream per camera) and the health service.

Each ``ObservationBatch`` is validated, matched against the gallery and stored in one pipelined
Redis round trip, then answered by one ``Ack`` naming every face id now stored (replays of
faces stored before included) and a ``Rejection`` for each invalid one. A bad message never
ends the stream. A stream whose ``x-camera-id`` / ``authorization: Bearer`` metadata does not
match a configured camera token is refused with ``UNAUTHENTICATED`` before any message is read.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from analysis_server.auth import FailureLimiter, bearer, client_bucket, peer_address
from analysis_server.edge_link import CameraSession
from analysis_server.errors import ConfigurationError
from analysis_server.services import Services
from analysis_server.settings import ServerSettings
from analysis_server.store import COLLISION, DUPLICATE, ERASED, STORED, now_ms
from analysis_server.validation import (
    BatchValidator,
    Observation,
    ValidationFailure,
    check_id,
)
from facecodec import enhancement
from facecodec.errors import PayloadError
from facewire.v1 import ingest_pb2 as pb
from facewire.v1 import ingest_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "facewire.v1.FaceIngest"
SERVICES = (SERVICE_NAME, "facewire.v2.FaceIngest")  # the compact wire, analysis_server/grpc_v2.py
_METHOD_PREFIXES = tuple(f"/{name}/" for name in SERVICES)
_CLOSE = object()  # the reader has finished: the writer ends the call
_INBOX = 16  # messages read ahead of the one being handled
_COALESCE = 8  # at most this many consecutive batches are handled together
# Ping every 10 s, give up after 5 more: a stream whose connection died without a word is closed
# within 15 s, after which its camera may open a new one (a second live stream is refused).
KEEPALIVE_S = (10, 5)


_HANDLER_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
                  (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}


class CameraAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every ``FaceIngest`` call without a valid camera token (health checks stay open).

    A call that presents a wrong token counts as one failure of its peer's client bucket (IPv4
    address, IPv6 /64) and of the camera id it claims, in ``limiter`` (in this process's memory:
    per replica). Past the limit either way, its wrong tokens get ``RESOURCE_EXHAUSTED`` after a
    delay instead of ``UNAUTHENTICATED``. A valid token is accepted before the limiter is asked,
    so other clients' failures never refuse it; accepted calls go straight to the servicer.
    """

    def __init__(self, services: Services, limiter: FailureLimiter | None = None):
        self.services = services
        s = services.settings
        self.limiter = limiter or FailureLimiter(s.auth_fail_limit, s.auth_fail_window_s, s.auth_lockout_s,
                                                 s.auth_fail_delay_s)
        # One refusal per method and case, of the method's own kind (unary or streaming either way).
        from facewire.v2 import ingest_pb2 as pb2

        self._deny = {(f"/{service.full_name}/{m.name}", presented):
                      _HANDLER_KINDS[m.client_streaming, m.server_streaming](self._denier(presented))
                      for service in (pb.DESCRIPTOR.services_by_name["FaceIngest"],
                                      pb2.DESCRIPTOR.services_by_name["FaceIngest"])
                      for m in service.methods for presented in (True, False)}

    def _denier(self, presented: bool):
        async def deny(request_iterator, context: grpc.aio.ServicerContext):
            if presented:  # a guess; a call with no token at all guesses nothing
                await self._count_failure(context)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or invalid camera credentials: send x-camera-id and "
                                "authorization: Bearer <camera token>")

        return deny

    async def _count_failure(self, context: grpc.aio.ServicerContext) -> None:
        """One wrong token: counted for the client and the camera; throttled ones are answered slowly."""
        keys = [client_bucket(peer_address(context.peer()))]
        camera_id = dict(context.invocation_metadata() or ()).get("x-camera-id", "")
        if isinstance(camera_id, str) and self.services.credentials.knows_camera(camera_id):
            keys.append(f"camera:{camera_id}")
        throttled = [k for k in keys if self.limiter.failed(k)]
        if throttled:
            await self.limiter.hold(throttled[0])
            wait = max(self.limiter.retry_after(k) for k in throttled)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"too many wrong camera tokens from this address or for this camera; wrong tokens "
                                f"are refused slowly for {wait:.0f} s more (valid ones are not affected)")

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method.startswith(_METHOD_PREFIXES):
            md = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
            camera_id = md.get("x-camera-id")
            token = bearer(md.get("authorization"))
            if not self.services.credentials.camera_allowed(camera_id, token):
                self.services.metrics.auth_failures.labels("grpc").inc()
                log.warning("refused a stream for camera %r: bad credentials", (camera_id or "")[:40])
                return self._deny.get((details.method, bool(token)))
        return await continuation(details)


class Rejections:
    """The rejections of one Ack, kept under ``max_bytes``: reasons cut to ``REASON_MAX`` characters,
    and once the next one would not fit, the rest summed up in one rejection without a face id (an
    Ack over the server's own send cap killed the stream: 31,300 invalid observations in one 4 MB
    batch made a 5.7 MB Ack). An edge sends valid observations, so only a broken or hostile batch
    ever loses names; the observations it left out are neither acknowledged nor named."""

    REASON_MAX = 200

    def __init__(self, ack: pb.Ack, max_bytes: int):
        self.ack, self.left = ack, max_bytes
        self.unnamed = 0

    def add(self, face_id: str, reason: str, field: str) -> None:
        face_id, reason = face_id[:128], reason[: self.REASON_MAX]
        size = len(face_id.encode()) + len(reason.encode()) + len(field) + 12  # the three fields and their framing
        if self.unnamed or size > self.left:
            self.unnamed += 1
            return
        self.left -= size
        self.ack.rejected.add(face_id=face_id, reason=reason, field=field)

    def close(self) -> None:
        if self.unnamed:
            self.ack.rejected.add(face_id="", field="batch",
                                  reason=f"batch: {self.unnamed} more observations were rejected; their "
                                         "ids are left out to keep this Ack under the message size limit")


class IngestServicer(ingest_pb2_grpc.FaceIngestServicer):
    """One ``Stream`` call per connected camera."""

    def __init__(self, services: Services):
        self.s = services
        self.validator = BatchValidator()

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext):
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        camera_id = md.get("x-camera-id", "")
        try:
            check_id("x-camera-id", camera_id)
        except ValidationFailure as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        session = CameraSession(camera_id, context.peer())
        refusal = await self.s.link.attach(session)  # one camera, one stream (see edge_link)
        if refusal is not None:
            log.warning("refused a second stream for camera %s from %s: %s", camera_id, context.peer(), refusal)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, refusal)
        self.s.metrics.streams.inc()
        reader = None
        try:  # from here on the session is ours: whatever fails (Redis down included), it is detached
            try:
                await self.s.store.touch_camera(camera_id, connected_ms=session.connected_ms, last_seen_ms=now_ms())
            except Exception as error:
                log.error("stream of camera %s cannot start: %r", camera_id, error)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the server cannot store observations now "
                                                                  f"({type(error).__name__}); reconnect later")
            self.s.spawn(self.s.flush_drops(camera_id))  # texture drops it has not confirmed yet
            reader = asyncio.get_running_loop().create_task(self._read_then_close(request_iterator, session))
            while (msg := await session.outbound.get()) is not _CLOSE:
                if session.evicted:
                    await context.abort(grpc.StatusCode.ABORTED, f"camera {camera_id!r} streams to another server "
                                                                 "replica now; reconnect")
                yield self.to_wire(msg, session)
            try:
                await reader
            except DecodeError as error:  # bytes that are not an EdgeMessage: the sender's fault, said so
                log.warning("camera %s sent a message that does not parse: %s", camera_id, error)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a message is not a valid EdgeMessage: {error}")
            except ValidationFailure as error:  # a stream that breaks the protocol (facewire.v2: no Hello first)
                log.warning("camera %s broke the protocol: %s", camera_id, error)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except Exception as error:
                log.error("stream of camera %s failed: %r", camera_id, error)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the server cannot store observations now "
                                                                  f"({type(error).__name__}); reconnect and resend")
        finally:
            if reader is not None:
                reader.cancel()
            self.s.link.detach(session)
            self.s.metrics.streams.dec()
            log.info("camera %s disconnected", camera_id)
            try:
                await self.s.store.touch_camera(camera_id, last_seen_ms=now_ms(), disconnected_ms=now_ms())
            except Exception as e:  # Redis may be the reason the stream ended
                log.warning("could not record the disconnection of camera %s: %s", camera_id, e)

    async def _read_then_close(self, request_iterator, session: CameraSession) -> None:
        try:
            await self._read(request_iterator, session)
        finally:
            await session.outbound.put(_CLOSE)

    async def _read(self, request_iterator, session: CameraSession) -> None:
        # A pump task reads the stream into ``inbox`` while earlier messages are being stored, so
        # consecutive observation batches already received are validated, decoded, matched and
        # written together (each still gets its own Ack, in order). ``room`` bounds the read-ahead
        # (gRPC flow control holds the rest); the pump always ends the inbox with _CLOSE or its error.
        inbox: asyncio.Queue = asyncio.Queue()
        room = asyncio.Semaphore(_INBOX)
        pump = asyncio.get_running_loop().create_task(self._pump(request_iterator, inbox, room))

        def take_now():
            room.release()
            return inbox.get_nowait()

        try:
            while (msg := await inbox.get()) is not _CLOSE:
                room.release()
                if isinstance(msg, BaseException):
                    raise msg
                if msg.WhichOneof("kind") != "observations":
                    await self._handle_other(msg, session)
                    continue
                batches = [msg.observations]
                follow = None
                while len(batches) < _COALESCE and not inbox.empty():
                    follow = take_now()
                    if isinstance(follow, BaseException) or follow is _CLOSE \
                            or follow.WhichOneof("kind") != "observations":
                        break
                    batches.append(follow.observations)
                    follow = None
                await self.handle_wire_batches(batches, session)
                if follow is _CLOSE:
                    break
                if isinstance(follow, BaseException):
                    raise follow
                if follow is not None:
                    await self._handle_other(follow, session)
        finally:
            pump.cancel()

    @staticmethod
    async def _pump(request_iterator, inbox: asyncio.Queue, room: asyncio.Semaphore) -> None:
        end: object = _CLOSE
        try:
            async for msg in request_iterator:
                await room.acquire()
                inbox.put_nowait(msg)
        except Exception as error:  # the reader raises it, as reading the stream itself would
            end = error
        finally:
            inbox.put_nowait(end)  # unbounded: never blocks, so the reader is always woken

    async def _handle_other(self, msg: pb.EdgeMessage, session: CameraSession) -> None:
        kind = msg.WhichOneof("kind")
        if kind == "enhancement":
            await self.handle_upload(msg.enhancement, session)
        elif kind == "hello":
            if msg.hello.camera_id and msg.hello.camera_id != session.camera_id:
                log.warning("camera %s said hello as %r; ignored", session.camera_id, msg.hello.camera_id[:40])
            session.agent_version = msg.hello.agent_version[:64]
            await self.s.store.touch_camera(session.camera_id, agent_version=session.agent_version,
                                            last_seen_ms=now_ms())
        else:
            log.warning("camera %s sent an empty message; ignored", session.camera_id)

    def to_wire(self, msg: pb.ServerMessage, session: CameraSession):
        """``msg`` as this service's protocol sends it (v1: as it is)."""
        return msg

    async def handle_wire_batches(self, batches: list, session: CameraSession) -> None:
        """Handle consecutive batches as received and send their Acks (v1: one per batch)."""
        for ack in await self.handle_batches(batches, session):
            await session.send(pb.ServerMessage(ack=ack))

    async def handle_batch(self, batch: pb.ObservationBatch, session: CameraSession) -> pb.Ack:
        """Validate, match and store one batch; the Ack it deserves."""
        return (await self.handle_batches([batch], session))[0]

    async def handle_batches(self, batches: list[pb.ObservationBatch], session: CameraSession) -> list[pb.Ack]:
        """Validate, match and store consecutive batches of one stream together; the Ack each deserves.

        One decode of every base layer, one gallery search and one Redis round trip for all of
        them; what each Ack says is what :meth:`handle_batch` on each in turn would say.
        """
        t0 = time.perf_counter()
        m = self.s.metrics
        limit = self.s.settings.max_batch
        acks = [pb.Ack() for _ in batches]
        room = [Rejections(ack, self.s.settings.grpc_max_message_bytes // 2) for ack in acks]
        obs: list[pb.FaceObservation] = []
        owner: list[int] = []  # the batch (and Ack) of each observation in ``obs``
        for k, batch in enumerate(batches):
            these = list(batch.observations)
            if len(these) > limit:
                for o in these[limit:]:
                    room[k].add(o.face_id, f"batch: more than {limit} observations in one batch", "batch")
                    m.rejected("batch")
                these = these[:limit]
            obs += these
            owner += [k] * len(these)
        now, retention = now_ms(), self.s.settings.retention_s * 1000
        valid: list[Observation] = []
        valid_owner: list[int] = []
        seen: set[tuple[int, str]] = set()
        for o, k, v in zip(obs, owner, await self.validator.validate(obs, session.camera_id, now, retention)):
            if isinstance(v, ValidationFailure):
                room[k].add(o.face_id, str(v), v.field)
                m.rejected(v.field)
                continue
            if (k, v.face_id) in seen:  # the same face twice in one batch: store it once, name it once
                continue
            seen.add((k, v.face_id))
            valid.append(v)
            valid_owner.append(k)
        if valid:
            await self.s.gallery.refresh_if_stale()
            matches = self.s.gallery.match_batch(np.stack([v.feature for v in valid]))
            outcome = await self.s.store.store_batch(valid, matches)
            counts = {STORED: 0, DUPLICATE: 0, ERASED: 0}
            hits = 0
            for v, k, mt, r in zip(valid, valid_owner, matches, outcome):
                if r == COLLISION:  # 8-byte hashes: about once in 10^13 pairs of ids; never merged
                    room[k].add(v.face_id, "face_id: its hash is a stored face's (another id): send it under "
                                           "another id", "face_id")
                    m.rejected("face_id")
                    continue
                acks[k].face_ids.append(v.face_id)
                counts[r] += 1
                if r == STORED and mt is not None and mt.watchlist:
                    hits += 1
            for r, n in counts.items():
                if n:
                    m.observations.labels({STORED: "stored", DUPLICATE: "duplicate", ERASED: "erased"}[r]).inc(n)
            if hits:
                m.watchlist_hits.inc(hits)
        for r in room:
            r.close()
        elapsed = time.perf_counter() - t0
        for _ in batches:
            m.batch_seconds.observe(elapsed)
        return acks

    async def handle_upload(self, upload: pb.EnhancementUpload, session: CameraSession) -> None:
        if self.s.link.deliver(upload, session.camera_id):
            return
        # Nobody waits (the request timed out) or it is not ours: keep a valid late answer for next time.
        if upload.status != pb.UPLOAD_STATUS_OK:
            return
        try:
            check_id("face_id", upload.face_id)
            face = await self.s.store.get(upload.face_id)
            if face is None or face.camera_id != session.camera_id:
                return
            enhancement.read_header(upload.payload)
        except (ValidationFailure, PayloadError) as e:
            log.info("camera %s sent an unrequested enhancement upload that is not usable: %s", session.camera_id, e)
            return
        await self.s.store.put_enhancement(face, upload.payload)


def create_server(settings: ServerSettings, services: Services, address: str | None = None
                  ) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The gRPC server bound to ``address`` (port 0 picks a free one): (server, port, health servicer)."""
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        interceptors=[CameraAuthInterceptor(services)],
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.keepalive_time_ms", KEEPALIVE_S[0] * 1000), ("grpc.keepalive_timeout_ms", KEEPALIVE_S[1] * 1000),
                 ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                 ("grpc.keepalive_permit_without_calls", 1)],
    )
    ingest_pb2_grpc.add_FaceIngestServicer_to_server(IngestServicer(services), server)
    from analysis_server.grpc_v2 import add_compact_servicer

    add_compact_servicer(services, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = address or f"{settings.host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    return server, port, health_servicer


def read_tls_file(path, setting: str) -> bytes:
    """The bytes of a certificate or key file; :class:`ConfigurationError` naming ``setting`` if unreadable."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigurationError(f"{setting}: cannot read {path}: {e.strerror}") from e


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings (client certificates required when a client CA is set); None: plaintext."""
    if not settings.tls:
        return None
    pair = (read_tls_file(settings.tls_key_file, "FACESERVER_TLS_KEY_FILE"),
            read_tls_file(settings.tls_cert_file, "FACESERVER_TLS_CERT_FILE"))
    ca = settings.tls_client_ca_file
    return grpc.ssl_server_credentials([pair], root_certificates=read_tls_file(ca, "FACESERVER_TLS_CLIENT_CA_FILE")
                                       if ca else None, require_client_auth=ca is not None)


async def set_serving(health_servicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *SERVICES):
        await health_servicer.set(name, status)
