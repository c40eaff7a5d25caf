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

from analysis_server import features
from analysis_server.at_rest import Sealer
from analysis_server.auth import Credentials
from analysis_server.compaction import Compactor
from analysis_server.edge_link import CONTEXT, FACE, EdgeLink
from analysis_server.errors import edge_payload, upload_error
from analysis_server.events_live import EventHub
from analysis_server.gallery import Gallery
from analysis_server.gallery_index import GalleryIndex
from analysis_server.history import History
from analysis_server.keys import Keys
from analysis_server.metrics import Metrics
from analysis_server.replicas import ReplicaRouter
from analysis_server.sessions import SessionStore
from analysis_server.settings import ANY_CAMERA, ServerSettings
from analysis_server.store import FaceRecord, FaceStore
from facecodec import enhancement
from facecodec.errors import PayloadError
from facewire.v1 import ingest_pb2 as pb

log = logging.getLogger(__name__)

DROP_CHUNK = 256  # face ids per DropTexture: well under the smallest gRPC message cap


async def base_sizes(store: FaceStore, face_ids: list[str]) -> list[int | None]:
    """The base layers' sizes of stored faces (``None``: gone), for the live view's cards."""
    return [None if r is None else len(r.base_layer) for r in await store.get_many(face_ids)]


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
    compactor: Compactor
    history: History | None = None
    grpc_serving: bool = False
    redis_warning: str = ""
    _tasks: set = field(default_factory=set)
    _drop_locks: dict = field(default_factory=dict)

    @classmethod
    async def open(cls, settings: ServerSettings, redis_url: str, cluster: bool = False,
                   embedded: bool = False) -> Services:
        """Connect to Redis (one server or a cluster), move faces of the previous storage layout into
        this one, load the gallery (does not start any server)."""
        from analysis_server.redis_server import apply_compact_encodings, async_client

        redis = async_client(redis_url, cluster=cluster)
        await redis.ping()
        keys = Keys(settings.key_prefix)
        store = FaceStore(redis, keys, settings.retention_s, settings.events_max, settings.audit_max,
                          settings.enhancement_ttl_s, Sealer(settings.storage_key_bytes),
                          audit_retention_s=settings.audit_retention_s)
        redis_warning = "" if embedded else await apply_compact_encodings(redis)
        await store.check_layout()
        await store.migrate_legacy()
        index = GalleryIndex(features.dim(), settings.exact_search_max, settings.faiss_nlist, settings.faiss_nprobe)
        gallery = Gallery(redis, keys, settings.match_threshold, index, sealer=Sealer(settings.storage_key_bytes))
        await gallery.load()
        metrics = Metrics()
        metrics.gallery_size.set_function(lambda: len(gallery.index))
        router = ReplicaRouter(redis, keys, settings.replica_id, settings.owner_ttl_s)
        services = cls(settings, redis, store, gallery, EdgeLink(router),
                       Credentials(settings.api_key_list, settings.camera_tokens), metrics, router,
                       EventHub(redis, keys.events, gallery, per_caller=settings.events_live_per_caller,
                                max_total=settings.events_live_max, backlog_max=settings.events_backlog_max,
                                base_sizes=lambda ids: base_sizes(store, ids)),
                       SessionStore(redis, keys, settings.session_ttl_s, settings.api_key_list),
                       Compactor(redis, settings.compact_after_erase_s, settings.compact_interval_s,
                                 settings.redis_compact))
        services.redis_warning = redis_warning
        if settings.history_index:
            services.history = History(store, settings.data_dir / "history" / settings.key_prefix,
                                       settings.history_nlist, settings.history_pq_bytes, settings.history_nprobe,
                                       settings.history_scan_codes, settings.history_rerank,
                                       settings.history_snapshot_s, settings.compact_after_erase_s,
                                       sealer=Sealer(settings.storage_key_bytes))
            store.on_stored = services.history.note_stored
            history = services.history
            metrics.index_faces.set_function(lambda: len(history.index) if history.index is not None else 0)
            metrics.index_rows.set_function(lambda: history.index.rows() if history.index is not None else 0)
            metrics.index_bytes.set_function(lambda: history.index.nbytes() if history.index is not None else 0)
            metrics.index_waiting.set_function(lambda: history.waiting)
        router.handle("send_drops", services._send_pending_drops)
        try:
            await router.start()
        except BaseException:
            await redis.aclose()
            raise
        return services

    def warnings(self) -> list[str]:
        """What an operator should fix although the server runs (logged at start, listed by ``/readyz``)."""
        s, out = self.settings, []
        if not s.storage_key and not s.dev_mode:
            out.append("FACESERVER_STORAGE_KEY is not set: base layers, features and enhancement layers are "
                       "stored in plaintext in Redis and its files on disk; set it (openssl rand -base64 32)")
        if ANY_CAMERA in s.camera_tokens and not s.dev_mode:
            out.append('FACESERVER_CAMERA_TOKENS has a wildcard "*" token: whoever holds it can stream as any '
                       "camera; give each camera its own token")
        if not s.redis_compact:
            out.append("FACESERVER_REDIS_COMPACT is off: erased and expired faces stay in Redis's AOF and RDB "
                       "files until Redis rewrites them (see the README, 'Erasure')")
        elif self.compactor.last_error:
            out.append(f"erased data may stay in Redis's files: {self.compactor.last_error}")
        if self.redis_warning:
            out.append(self.redis_warning)
        return out

    async def close(self) -> None:
        self.live.close()
        if self.history is not None:
            self.history.close()
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

    def cancel_background(self) -> None:
        """Cancel every task :meth:`spawn` started (shutdown: nothing new is started after this)."""
        for t in list(self._tasks):
            t.cancel()

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
        payload = await self._fetch_layer(face, FACE, codec, quality)
        with edge_payload(f"the enhancement layer camera {face.camera_id!r} uploaded"):
            enhancement.read_header(payload)
        await self.store.put_enhancement(face, payload)
        return payload, "edge"

    async def context_layer(self, face: FaceRecord) -> bytes:
        """The face's context payload (:mod:`facecodec.context`), always from the edge: a picture of the
        scene is not kept at the server (it leaves the edge for the operator who asked, like a live view)."""
        from facecodec import context

        payload = await self._fetch_layer(face, CONTEXT)
        with edge_payload(f"the context picture camera {face.camera_id!r} uploaded"):
            context.read_header(payload)
        return payload

    async def _fetch_layer(self, face: FaceRecord, layer: str, codec: str = "", quality: int = 0) -> bytes:
        """One layer's payload from the edge that holds the face; the upload's status as our error."""
        try:
            upload = await self.link.request_enhancement(face.camera_id, face.face_id, codec, quality,
                                                         self.settings.enhancement_timeout_s, layer=layer)
        except Exception as e:
            self.metrics.enhancement.labels(type(e).__name__).inc()
            raise
        status = upload.status
        self.metrics.enhancement.labels(pb.UploadStatus.Name(status) if status in pb.UploadStatus.values()
                                        else str(status)).inc()
        if status == pb.UPLOAD_STATUS_OK:
            return upload.payload
        raise upload_error(status, face.camera_id, face.face_id, "texture" if layer == FACE else f"{layer} picture",
                           upload.message)

    async def _send_pending_drops(self, body: dict) -> dict:
        """Another replica erased faces of a camera whose stream is open here: send their drops."""
        return {"sent": await self.flush_drops(str(body.get("camera_id", "")))}

    async def flush_drops(self, camera_id: str) -> int:
        """Send the camera's pending texture drops down its stream (open on this replica) and forget
        those its edge confirms (see :meth:`EdgeLink.drop_texture`); how many were confirmed.

        Unconfirmed drops stay in Redis: they are sent again when the camera reconnects and at
        every retention sweep while it is connected.
        """
        async with self._drop_locks.setdefault(camera_id, asyncio.Lock()):  # one flush per camera at a time
            if self.link.session(camera_id) is None:
                return 0
            ids = await self.store.pending_drops(camera_id)
            confirmed = 0
            for i in range(0, len(ids), DROP_CHUNK):
                chunk = ids[i:i + DROP_CHUNK]
                if not await self.link.drop_texture(camera_id, chunk, self.settings.enhancement_timeout_s):
                    break
                await self.store.forget_drops(camera_id, chunk)
                confirmed += len(chunk)
            if confirmed:
                log.info("camera %s confirmed dropping the texture of %d erased faces", camera_id, confirmed)
            return confirmed

    async def flush_all_drops(self) -> None:
        """Retry the unconfirmed drops of every camera streaming to this replica."""
        for camera_id in list(self.link.online()):
            try:
                await self.flush_drops(camera_id)
            except Exception as e:  # tried again at the next sweep
                log.warning("texture drops for camera %s: %r", camera_id, e)

    # -- privacy -----------------------------------------------------------------------------
    async def erase_faces(self, face_ids: list[str], who: str) -> list[str]:
        """Erase faces and ask their edges to drop the texture; erased ids.

        The drops are written to Redis first and stay there until the edge confirms them
        (:meth:`flush_drops`): sent now to a camera streaming here, through the replica that
        holds its stream otherwise, or when the camera reconnects.
        """
        by_camera = await self.store.delete_faces(face_ids)
        for camera_id, ids in by_camera.items():
            await self.store.add_pending_drops(camera_id, ids)
            if self.link.session(camera_id) is not None:
                self.spawn(self.flush_drops(camera_id))
                continue
            try:
                await self.router.notify(camera_id, "send_drops", {"camera_id": camera_id})
            except Exception as e:  # they stay pending in Redis
                log.warning("could not tell the replica holding camera %s to drop textures: %r", camera_id, e)
        self.compactor.erased()  # and from Redis's files within compact_after_erase_s
        erased = [f for ids in by_camera.values() for f in ids]
        for f in erased:
            await self.store.audit(who, "erase_face", face_id=f)
        return erased
