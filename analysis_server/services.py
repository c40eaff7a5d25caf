"""The server's dependencies in one object, shared by the gRPC service and the REST app.

Also holds the two operations that cross them: the enhancement round trip (REST asks, the
edge answers on its stream, on this replica or another one) and privacy erasure (Redis, then
``DropTexture`` to the edge, through the replica that holds its stream).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from analysis_server.at_rest import Sealer
from analysis_server.auth import Credentials
from analysis_server.edge_link import EdgeLink
from analysis_server.errors import EdgeFailed, Gone, NotFound
from analysis_server.events_live import EventHub
from analysis_server.gallery import Gallery
from analysis_server.gallery_index import GalleryIndex
from analysis_server.keys import Keys
from analysis_server.metrics import Metrics
from analysis_server.replicas import ReplicaRouter
from analysis_server.sessions import SessionStore
from analysis_server.settings import ServerSettings
from analysis_server.store import FaceRecord, FaceStore
from facecodec import enhancement
from facecodec.errors import PayloadError
from facewire.v1 import ingest_pb2 as pb

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: ServerSettings
    redis: aioredis.Redis
    store: FaceStore
    gallery: Gallery
    link: EdgeLink
    credentials: Credentials
    metrics: Metrics
    router: ReplicaRouter
    live: EventHub
    sessions: SessionStore
    grpc_serving: bool = False
    _tasks: set = field(default_factory=set)

    @classmethod
    async def open(cls, settings: ServerSettings, redis_url: str) -> Services:
        """Connect to Redis and load the gallery (does not start any server)."""
        from analysis_server.redis_server import async_client

        redis = async_client(redis_url)
        await redis.ping()
        keys = Keys(settings.key_prefix)
        store = FaceStore(redis, keys, settings.retention_s, settings.events_max, settings.audit_max,
                          settings.enhancement_ttl_s, Sealer(settings.storage_key_bytes))
        index = GalleryIndex(128, settings.exact_search_max, settings.faiss_nlist, settings.faiss_nprobe)
        gallery = Gallery(redis, keys, settings.match_threshold, index, sealer=Sealer(settings.storage_key_bytes))
        await gallery.load()
        metrics = Metrics()
        metrics.gallery_size.set_function(lambda: len(gallery.index))
        router = ReplicaRouter(redis, keys, settings.replica_id, settings.owner_ttl_s)
        services = cls(settings, redis, store, gallery, EdgeLink(router),
                       Credentials(settings.api_key_list, settings.camera_tokens), metrics, router,
                       EventHub(redis, keys.events, gallery),
                       SessionStore(redis, keys, settings.session_ttl_s, settings.api_key_list))
        router.handle("send_drops", services._send_pending_drops)
        try:
            await router.start()
        except BaseException:
            await redis.aclose()
            raise
        return services

    async def close(self) -> None:
        self.live.close()
        await self.router.stop()
        await self.redis.aclose()

    def spawn(self, coro) -> asyncio.Task:
        """A background task that is kept alive and whose failure is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task failed: %r", t.exception())

        task.add_done_callback(done)
        return task

    # -- enhancement round trip --------------------------------------------------------------
    async def enhancement_layer(self, face: FaceRecord, codec: str = "", quality: int = 0) -> tuple[bytes, str]:
        """(payload, "cache" or "edge"): the cached layer when it fits the request, else the edge's upload."""
        cached = await self.store.get_enhancement(face.face_id)
        if cached is not None:
            try:
                h = enhancement.read_header(cached)
                if (not codec or h.codec == codec) and (not quality or h.quality == quality):
                    return cached, "cache"
            except PayloadError:
                log.warning("cached enhancement layer of a face does not validate; asking the edge again")
        try:
            upload = await self.link.request_enhancement(face.camera_id, face.face_id, codec, quality,
                                                         self.settings.enhancement_timeout_s)
        except Exception as e:
            self.metrics.enhancement.labels(type(e).__name__).inc()
            raise
        status = upload.status
        self.metrics.enhancement.labels(pb.UploadStatus.Name(status)).inc()
        detail = f" ({upload.message})" if upload.message else ""
        if status == pb.UPLOAD_STATUS_OK:
            try:
                enhancement.read_header(upload.payload)
            except PayloadError as e:
                raise EdgeFailed(f"camera {face.camera_id!r} uploaded an enhancement layer that does not validate: {e}") from e
            await self.store.put_enhancement(face, upload.payload)
            return upload.payload, "edge"
        if status == pb.UPLOAD_STATUS_EXPIRED:
            raise Gone(f"camera {face.camera_id!r} no longer holds the texture of face {face.face_id!r}{detail}")
        if status == pb.UPLOAD_STATUS_UNKNOWN_FACE:
            raise NotFound(f"camera {face.camera_id!r} does not know face {face.face_id!r}{detail}")
        raise EdgeFailed(f"camera {face.camera_id!r} could not upload the enhancement layer{detail}")

    async def _send_pending_drops(self, body: dict) -> dict:
        """Another replica erased faces of a camera whose stream is open here: send their drops."""
        camera_id = str(body.get("camera_id", ""))
        if self.link.session(camera_id) is None:
            return {"sent": 0}
        ids = await self.store.take_pending_drops(camera_id)
        if ids and not await self.link.drop_texture(camera_id, ids):
            await self.store.add_pending_drops(camera_id, ids)
            return {"sent": 0}
        return {"sent": len(ids)}

    # -- privacy -----------------------------------------------------------------------------
    async def erase_faces(self, face_ids: list[str], who: str) -> list[str]:
        """Erase faces and ask their edges to drop the texture (queued for offline edges); erased ids."""
        by_camera = await self.store.delete_faces(face_ids)
        for camera_id, ids in by_camera.items():
            if not await self.link.drop_texture(camera_id, ids):
                # Kept in Redis (sent when the camera reconnects); if its stream is open on another
                # replica, that replica is told to send them now.
                await self.store.add_pending_drops(camera_id, ids)
                try:
                    await self.router.notify(camera_id, "send_drops", {"camera_id": camera_id})
                except Exception as e:  # they stay pending in Redis
                    log.warning("could not tell the replica holding camera %s to drop textures: %r", camera_id, e)
        erased = [f for ids in by_camera.values() for f in ids]
        for f in erased:
            await self.store.audit(who, "erase_face", face_id=f)
        return erased
