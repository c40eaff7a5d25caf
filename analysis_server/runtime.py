"""Runs the whole server in one asyncio loop: Redis (URL or embedded), gRPC ingest, REST, retention sweeps.

Both servers share the loop, so an operator's REST request can put an ``EnhancementRequest``
on a camera's stream and await its upload without threads. Shutdown (SIGTERM/SIGINT or
:meth:`AnalysisServer.stop`) stops taking new HTTP requests, gives gRPC streams
``grpc_grace_s`` to finish, then closes Redis and stops the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket

import uvicorn

from analysis_server.api import create_app
from analysis_server.grpc_service import create_server, read_tls_file, set_serving
from analysis_server.redis_server import EmbeddedRedis
from analysis_server.services import Services
from analysis_server.settings import ServerSettings

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`AnalysisServer` owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def with_dev_secrets(settings: ServerSettings) -> ServerSettings:
    """In development mode, random secrets for those not set (logged once, so a person can use them)."""
    if not settings.dev_mode:
        return settings.require_secrets()
    update: dict = {}
    if not settings.api_key_list:
        update["api_keys"] = secrets.token_urlsafe(24)
        log.warning("development mode: REST API key %s", update["api_keys"])
    if not settings.camera_tokens:
        update["camera_tokens"] = {"*": secrets.token_urlsafe(24)}
        log.warning("development mode: camera token (any camera id) %s", update["camera_tokens"]["*"])
    return settings.model_copy(update=update)


class AnalysisServer:
    """The analysis server's processes and tasks, started and stopped together."""

    def __init__(self, settings: ServerSettings):
        self.settings = with_dev_secrets(settings)
        self.embedded: EmbeddedRedis | None = None
        self.services: Services | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._grpc = None
        self._health = None
        self._http: _Uvicorn | None = None
        self.app = None
        self._http_task: asyncio.Task | None = None
        self._stopped = False

    async def start(self) -> None:
        s = self.settings
        url, cluster = s.redis_target
        if not url:
            self.embedded = EmbeddedRedis(s.data_dir)
            # Started from this (the loop's) thread, not a worker: the child's parent-death signal
            # fires when the thread that forked it ends.
            url = self.embedded.start()
        try:
            self.services = await Services.open(s, url, cluster=cluster, embedded=self.embedded is not None)
            # HTTP first: its lifespan loads the models. gRPC opens only after that, so the first
            # stream never races the warm-up (importing PyTorch from two threads at once crashes).
            # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
            # without it every response on a kept-alive connection waited 40 ms for a delayed ACK (Nagle).
            sock = socket.socket(socket.AF_INET6 if ":" in s.host else socket.AF_INET, socket.SOCK_STREAM,
                                 socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((s.host, s.http_port))
            self.http_port = sock.getsockname()[1]
            self.app = app = create_app(s, self.services)
            tls = {}
            if s.tls:  # HTTPS with the gRPC server's certificate (read here first, for a clear error)
                read_tls_file(s.tls_cert_file, "FACESERVER_TLS_CERT_FILE")
                read_tls_file(s.tls_key_file, "FACESERVER_TLS_KEY_FILE")
                tls = {"ssl_certfile": str(s.tls_cert_file), "ssl_keyfile": str(s.tls_key_file)}
            # X-Forwarded-For is believed only from the proxies named in FACESERVER_TRUSTED_PROXIES
            # (uvicorn alone would trust it from 127.0.0.1, or from FORWARDED_ALLOW_IPS).
            proxies = s.trusted_proxies.replace(" ", "").strip(",")
            config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=max(1, int(s.grpc_grace_s)),
                                    proxy_headers=bool(proxies), forwarded_allow_ips=proxies or "", **tls)
            self._http = _Uvicorn(config)
            self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]))
            while not self._http.started:
                if self._http_task.done():
                    self._http_task.result()
                    raise RuntimeError("the HTTP server stopped during startup (see the log above)")
                await asyncio.sleep(0.02)

            self._grpc, self.grpc_port, self._health = create_server(s, self.services)
            await self._grpc.start()
            self.services.grpc_serving = True
            await set_serving(self._health, True)
            self.services.spawn(self._sweep_forever())
            self.services.spawn(self.services.compactor.run())
            if self.services.history is not None:
                self.services.spawn(self.services.history.run(self.settings.sweep_interval_s))
        except BaseException:
            await self.stop()
            raise
        for warning in self.services.warnings():
            log.warning("%s", warning)
        log.info("analysis server ready: grpc=%s:%d http=%s:%d redis=%s replica=%s tls=%s", s.host, self.grpc_port,
                 s.host, self.http_port, "embedded" if self.embedded else ("cluster" if cluster else "external"),
                 self.services.router.replica_id,
                 "on" if s.tls else "off")

    async def _sweep_forever(self) -> None:
        assert self.services is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                removed = await self.services.store.sweep(self.services.gallery.identity_ids)
                if removed:
                    log.info("retention sweep removed %d expired index entries", removed)
                    self.services.compactor.erased()  # expired records leave Redis's files too
            except Exception as e:  # a failed sweep is retried next interval
                log.warning("retention sweep failed: %r", e)
            await self.services.flush_all_drops()  # texture drops their edges have not confirmed

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("analysis server stopping")
        if self.services is not None:
            self.services.grpc_serving = False
            self.services.cancel_background()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.services is not None:
            self.services.live.close()  # open event streams end now, so HTTP need not wait for them
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(self.settings.grpc_grace_s)
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await self._http_task
        if self.services is not None:
            if self.services.history is not None and self.services.history.ready.is_set():
                try:  # a restart then reads only the change log written after this
                    await asyncio.wait_for(self.services.history.save(), 60)
                except Exception as e:
                    log.warning("search index not saved at shutdown: %r", e)
            await self.services.close()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("analysis server stopped")


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = AnalysisServer(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()
