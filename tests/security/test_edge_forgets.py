"""The edge forgets what it dropped: nothing of an erased face or an acknowledged observation stays
in the files of a real edge agent.

The attack (issue 15, item 2): someone who gets the edge box's disk reads its data folder. Before,
the texture store kept plaintext 112x112 PNG face crops (0644, 7 days by default); after the
server erased a face and the edge logged "dropped the texture", ``texture.sqlite3-wal`` still held
71 of the 75 256-byte chunks of that PNG, and the spool's WAL held every acknowledged base layer.

Here a real edge agent (``python -m edge_agent``) watches a live MJPEG camera and streams to a real
analysis server; the test erases one of its faces over REST and reads every byte of every file in
the agent's data folder. With ``EDGE_STORAGE_KEY`` the crops are sealed from the start.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest
import redis
from server_testkit import API_KEY, TOKENS, stored_face

from analysis_server.keys import Keys
from testkit.processes import AgentProcess, CameraProcess, wait_until

pytestmark = pytest.mark.slow

KEY = base64.b64encode(os.urandom(32)).decode()


def pieces(value: bytes, size: int = 64) -> list[bytes]:
    return [value[i:i + size] for i in range(0, max(1, len(value) - size + 1), size)]


def found(folder: Path, needles: list[bytes], prefix: str = "") -> dict[str, int]:
    """file name -> how many of ``needles`` its bytes contain (files with none left out), among the
    files whose name starts with ``prefix``."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name.startswith(prefix):
            data = f.read_bytes()
            n = sum(p in data for p in needles)
            if n:
                out[f.name] = n
    return out


def _gone(folder: Path, needles: list[bytes], within_s: float, prefix: str = "") -> dict[str, int]:
    deadline = time.monotonic() + within_s
    while (left := found(folder, needles, prefix)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _crop(agent: AgentProcess, face_id: str) -> bytes:
    with sqlite3.connect(agent.folder / "data" / "texture.sqlite3") as db:
        return bytes(db.execute("SELECT crop FROM texture WHERE face_id = ?", (face_id,)).fetchone()[0])


@pytest.fixture
def system(make_server, tmp_path):
    """A server (its own key prefix on the session's redis-server), a live camera and an edge agent
    on it: ``start(**agent_env)`` returns (server, agent, Redis client)."""
    started = []

    def start(**env: str):
        server = make_server(enhancement_timeout_s=10.0)
        camera = CameraProcess(seed=3)
        started.append(camera)
        camera.start()
        agent = AgentProcess(tmp_path / "agent", server.grpc_target, [("cam-1", camera.url)],
                             EDGE_TOKEN=TOKENS["cam-1"], **env)
        started.append(agent)
        agent.start()
        agent.wait_for("acknowledged", 2, timeout=300)
        client = redis.Redis.from_url(server.settings.redis_url)
        started.append(client)
        return server, agent, client

    yield start
    for p in reversed(started):
        (p.close if isinstance(p, redis.Redis) else p.stop)()


def test_a_dropped_crop_and_acknowledged_base_layers_leave_the_edge_files(system):
    server, agent, r = system()
    data = agent.folder / "data"
    keys = Keys(server.settings.key_prefix)
    acked = [f for f in agent.face_ids() if stored_face(r, keys.prefix, f)]
    assert len(acked) >= 2
    victim = acked[0]
    png = _crop(agent, victim)
    assert png.startswith(b"\x89PNG")  # no key: the crop is a plain PNG (what an attacker greps for)
    bases = [stored_face(r, keys.prefix, f)["base"] for f in acked]
    # Acknowledged observations (their base layers) leave the spool's database and WAL (the texture
    # store keeps each face's base layer with its crop: the enhancement layer is predicted from it).
    assert _gone(data, bases, 10, "spool") == {}, "acknowledged base layers are still in the spool's files"
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.get(f"/faces/{victim}/image", params={"layer": "full"}).status_code == 200
        assert found(data, pieces(png))  # the crop is there to be found before the erasure
        assert api.delete(f"/faces/{victim}").json()["texture_drop_sent"] is True
        wait_until(lambda: "dropped the texture" in agent.log.read_text(), 30, "the edge to drop the texture")
        assert _gone(data, pieces(png), 5) == {}, "the dropped crop is still in the texture store's files"
        assert api.get(f"/faces/{victim}/image", params={"layer": "full"}).status_code == 404


def test_with_a_storage_key_crops_are_sealed_and_the_files_private(system):
    server, agent, r = system(EDGE_STORAGE_KEY=KEY)
    data = agent.folder / "data"
    keys = Keys(server.settings.key_prefix)
    acked = [f for f in agent.face_ids() if stored_face(r, keys.prefix, f)]
    victim = acked[0]
    sealed = _crop(agent, victim)
    assert not sealed.startswith(b"\x89PNG")
    from edge_agent.at_rest import Sealer, parse_key

    png = Sealer(parse_key(KEY)).open(sealed, f"texture:{victim}:crop")
    assert png.startswith(b"\x89PNG")
    assert found(data, [b"IHDR", b"IDAT"]) == {}  # no PNG anywhere in the agent's files
    assert found(data, pieces(png)) == {}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in data.iterdir() if f.is_file()}
    assert {"texture.sqlite3", "spool.sqlite3"} <= set(modes) and set(modes.values()) == {0o600}, modes
    with httpx.Client(base_url=server.http_url, headers={"X-API-Key": API_KEY}, timeout=30) as api:
        assert api.get(f"/faces/{victim}/image", params={"layer": "full"}).status_code == 200  # it still answers
        assert api.delete(f"/faces/{victim}").status_code == 200
        wait_until(lambda: "dropped the texture" in agent.log.read_text(), 30, "the edge to drop the texture")
        assert _gone(data, pieces(sealed), 5) == {}, "the dropped (sealed) crop is still in the files"
