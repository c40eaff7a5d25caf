"""``python -m bench.reliability {restarts,fuzz,soak,privacy}``: the fault, fuzz and soak figures of
issue 9 and the erasure figure of issue 15.

restarts   Edge agents (``--agents``, each watching its own live camera) stream while the analysis
           server is SIGKILLed and restarted ``--server-kills`` times and the Redis server
           ``--redis-kills`` times. During every outage an operator asks for a stored face's
           full-fidelity image (it must fail with a clear status: connection refused, 503 or
           504) and again after recovery (it must succeed). At the end every face an agent made
           must be in Redis exactly once and every spool must have stayed under its cap.
fuzz       The mutation fuzzer of ``bench/fuzzing.py`` on the base-layer, enhancement-layer and
           container decoders and on the server's handling of EdgeMessage bytes (``--inputs``
           each), then ``--channel-inputs`` mutants sent to a real server over real gRPC streams.
privacy    ``--faces`` faces erased one by one and ``--identities`` identities erased with the faces
           matched to them, on a real server, its redis-server and a real edge agent on a live camera
           (default settings); every file the three write is read until none of the erased values
           (base layers, features, enhancement layers, edge crops, names, notes, enrolled features)
           is found: ``bytes_found`` (file -> pieces still found, want none) and ``seconds_to_gone``.
soak       ``--minutes`` of ingest at half the best rate in ``bench/results/ingest.json`` (simulated
           cameras on gRPC streams) plus a real edge agent on a live camera, with image requests
           mixed in (``layer=full`` of the agent's faces, ``layer=base`` of the others): faces
           stored per minute, RSS of server and agent, Redis keys and memory against what the
           retention period allows.

Each command reads ``bench/results/reliability.json``, replaces only its own key (``restarts``,
``fuzz``, ``soak``, ``privacy``) and writes it back, so the keys other commands write (``api_fuzz``) stay.
Every key carries the commit and the machine it was measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from testkit.processes import (API_KEY, FACES, PREFIX, TOKEN, AgentProcess, CameraProcess, RedisProcess,
                               ServerProcess, wait_until)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "reliability.json"
PROVENANCE_PATHS = ("analysis_server", "edge_agent", "facecodec", "facewire", "bench", "testkit",
                    ":(exclude)bench/results")
OUTAGE_OK = {"refused", "unreachable", 503, 504}  # what an image request may answer while a part is down

log = logging.getLogger("bench.reliability")


# -- what the system stored (read from Redis) ----------------------------------------------------
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


# -- the results file ---------------------------------------------------------------------------
def update_results(key: str, value: dict, out: Path = RESULTS) -> dict:
    """Read ``out``, set ``key`` (stamped with the commit and machine), write it back; other keys stay."""
    from eval import provenance

    stamp = {"commit": provenance.commit(PROVENANCE_PATHS), "machine": provenance.machine(),
             "load_average": [round(x, 2) for x in os.getloadavg()]}
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = {**value, **stamp}
    data["commit"], data["machine"] = stamp["commit"], stamp["machine"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out)
    return data


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="", dynamic_ncols=True, mininterval=1.0)


# -- restarts ----------------------------------------------------------------------------------
class SpoolWatch:
    """Samples every agent's spool size (its status file) until stopped: the largest seen."""

    def __init__(self, agents: list[AgentProcess]):
        self.agents = agents
        self.max_bytes = [0] * len(agents)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SpoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for i, a in enumerate(self.agents):
                self.max_bytes[i] = max(self.max_bytes[i], a.counter("spool_bytes"))


def newest_face(redis_client) -> str | None:
    ids = newest_faces(redis_client, 1)
    return ids[0] if ids else None


def _wait_new_observations(agents: list[AgentProcess], before: list[int], timeout: float = 90) -> None:
    for a, b in zip(agents, before):
        a.wait_for("observations", b + 1, timeout)


def _image_until_ok(server: ServerProcess, face_id: str, timeout: float = 90) -> list:
    """Ask for the full image until it comes; every status seen, the 200 last."""
    seen: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = server.image(face_id, "full")
        seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.5)
    return seen


def run_restarts(work: Path, agents: int = 3, server_kills: int = 3, redis_kills: int = 1, outage_s: float = 3.0,
                 spool_max_mb: float = 1.0, progress=None) -> dict:
    """The restart scenario in ``work``; returns the figures (see the module docstring)."""
    faults = ["server"] * server_kills
    for i in range(redis_kills):  # Redis faults between the server's, not all at the end
        faults.insert(min(len(faults), 1 + 2 * i), "redis")
    started: list = []
    outage, recovery = [], []
    redis = RedisProcess(work / "redis")
    try:
        redis.start()
        started.append(redis)
        server = ServerProcess(work / "server", redis.url)
        server.start()
        started.append(server)
        cameras = [CameraProcess(seed=i) for i in range(agents)]
        for c in cameras:
            c.start()
            started.append(c)
        fleet = [AgentProcess(work / f"agent-{i}", server.grpc_target, [(f"cam-{i}", c.url)],
                              EDGE_SPOOL_MAX_MB=str(spool_max_mb)) for i, c in enumerate(cameras)]
        for a in fleet:
            a.start()
            started.append(a)
        with SpoolWatch(fleet) as watch:
            for a in fleet:
                a.wait_for("acknowledged", 1, timeout=300)
            if progress:
                progress(f"{agents} agents streaming")
            for fault in faults:
                probe = newest_face(redis.client())
                before = [a.counter("observations") for a in fleet]
                t_down = time.monotonic()
                (server if fault == "server" else redis).kill()
                statuses = [server.image(probe, "full")]
                _wait_new_observations(fleet, before)  # faces keep coming while it is down
                time.sleep(max(0.0, outage_s - (time.monotonic() - t_down)))
                statuses.append(server.image(probe, "full"))
                outage.append({"fault": fault, "face_id": probe, "statuses": statuses})
                if fault == "server":
                    server.start()
                else:
                    redis.start()
                    server.wait_ready()
                seen = _image_until_ok(server, probe)
                recovery.append({"fault": fault, "face_id": probe, "statuses": seen})
                for a in fleet:
                    a.wait_for("acknowledged", a.counter("acknowledged") + 1, timeout=120)
                if progress:
                    progress(f"{fault} killed and restarted: during {statuses}, after {seen[-3:]}")
            for c in cameras:  # the people stop coming; what the agents hold must all arrive
                c.stop()
            for a in fleet:
                wait_until(lambda a=a: a.counter("spooled") == 0 and a.status().get("connected") == "1/1",
                           timeout=120, what=f"{a.folder.name} to drain its spool")
            time.sleep(2.0)  # open tracks end (TTL 0.4 s) and are sent
            for a in fleet:
                wait_until(lambda a=a: a.counter("spooled") == 0, timeout=60, what=f"{a.folder.name} drained")
        statuses = [a.status() for a in fleet]
        exit_codes = [a.stop() for a in fleet]
        face_ids = [f for a in fleet for f in a.face_ids()]
        left = [a.spooled() for a in fleet]
        counts = stored_once(redis.client(), face_ids)
        listed = [f for i in range(agents) for f in server.stored_faces(f"cam-{i}")]
        counts["duplicates"] += len(listed) - len(set(listed))
        cap = int(spool_max_mb * 2**20)
        return {
            "agents": agents, "server_kills": server_kills, "redis_kills": redis_kills,
            "faces_sent": len(face_ids), "faces_stored": counts["faces_stored"], "duplicates": counts["duplicates"],
            "missing": counts["missing"][:20], "faces_listed": len(listed),
            "spool_cap_bytes": cap, "spool_max_bytes_seen": watch.max_bytes, "spool_within_cap": all(
                b <= cap for b in watch.max_bytes),
            "spool_dropped": sum(int(s.get("spool_dropped", 0)) for s in statuses),
            "spooled_at_end": left, "agent_exit_codes": exit_codes,
            "reconnects": sum(int(s.get("reconnects", 0)) for s in statuses),
            "sent_with_replays": sum(int(s.get("sent", 0)) for s in statuses),
            "image_during_outage": outage, "image_after_recovery": recovery,
            "outage_statuses_clear": all(s in OUTAGE_OK for o in outage for s in o["statuses"]),
            "recovered": all(r["statuses"][-1] == 200 for r in recovery),
        }
    finally:
        for p in reversed(started):
            p.stop()


def cmd_restarts(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-restarts-") as tmp:
        result = run_restarts(Path(tmp), args.agents, args.server_kills, args.redis_kills, args.outage_s,
                              progress=lambda m: log.info("%s", m))
    update_results("restarts", result, args.out)
    log.info("faces sent %d, stored %d, duplicates %d, spools within cap: %s, outage statuses clear: %s, "
             "recovered: %s -> %s", result["faces_sent"], result["faces_stored"], result["duplicates"],
             result["spool_within_cap"], result["outage_statuses_clear"], result["recovered"], args.out)
    ok = (result["faces_sent"] == result["faces_stored"] and not result["duplicates"] and result["spool_within_cap"]
          and result["outage_statuses_clear"] and result["recovered"])
    return 0 if ok else 1


# -- fuzz ------------------------------------------------------------------------------------------
def channel_fuzz(work: Path, inputs: int, seed: int = 0, progress=None) -> dict:
    """Send ``inputs`` mutated EdgeMessages to a real server over real gRPC streams (one stream
    per message; a message that does not parse ends its stream, as it must). A crash is the server
    dying, a stream ending UNKNOWN (an unhandled exception) or the server logging that a stream
    failed; a hang is a stream without an answer in 30 s. At the end a valid batch must still be
    acknowledged."""
    import grpc

    from bench import fuzzing
    from facewire.v1 import ingest_pb2 as pb

    rng = random.Random(seed)
    target = fuzzing.grpc_messages_target()
    corpus = list(target.seeds)
    redis = RedisProcess(work / "redis")
    redis.start()
    server = ServerProcess(work / "server", redis.url)
    outcomes: Counter[str] = Counter()
    crashes = hangs = 0
    try:
        server.start()
        channel = grpc.insecure_channel(server.grpc_target)
        stream = channel.stream_stream("/facewire.v1.FaceIngest/Stream", request_serializer=lambda b: b,
                                       response_deserializer=pb.ServerMessage.FromString)
        md = (("x-camera-id", "cam-1"), ("authorization", f"Bearer {TOKEN}"))

        def send(data: bytes) -> tuple[str, list]:
            replies = []
            try:
                for reply in stream(iter([data]), metadata=md, timeout=30):
                    replies.append(reply)
                return "OK", replies
            except grpc.RpcError as e:
                return e.code().name, replies

        for i in range(inputs):
            parent = rng.choice(corpus)
            data = parent if i < len(target.seeds) else (
                fuzzing.structured_message_mutation(rng, parent, corpus) if rng.random() < 0.6
                else fuzzing.mutate(rng, parent, corpus))
            code, replies = send(data)
            outcomes[code] += 1
            if code == "UNKNOWN":
                crashes += 1
            elif code == "DEADLINE_EXCEEDED":
                hangs += 1
            if server.proc.poll() is not None:
                crashes += 1
                server.start()
            if progress:
                progress(1)
        valid = fuzzing.observation_seeds()[1]
        final_code, replies = send(valid)
        still_acks = final_code == "OK" and any(r.WhichOneof("kind") == "ack" and r.ack.face_ids for r in replies)
        channel.close()
        failed_streams = server.logs().count("failed: ")
        return {"inputs": inputs, "crashes": crashes + failed_streams, "hangs": hangs, "outcomes": dict(outcomes),
                "server_restarted": server.starts - 1, "valid_batch_acked_after": still_acks}
    finally:
        server.stop()
        redis.stop()


def cmd_fuzz(args: argparse.Namespace) -> int:
    from bench import fuzzing

    results: dict[str, dict] = {}
    for name in args.targets.split(","):
        target = fuzzing.TARGETS[name]()
        with _bar(args.inputs, f"fuzz {name}") as bar:
            rep = fuzzing.fuzz(target, args.inputs, args.seed, progress=bar.update)
        results[name] = rep.summary()
        log.info("%s: %d inputs, %d crashes, %d hangs, %d decoded, %d distinct outcomes, slowest %.0f ms", name,
                 rep.inputs, rep.crashes, rep.hangs, rep.decoded, len(rep.outcomes), rep.max_input_ms)
    if args.channel_inputs:
        with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp, _bar(args.channel_inputs, "fuzz grpc_channel") as bar:
            results["grpc_channel"] = channel_fuzz(Path(tmp), args.channel_inputs, args.seed, bar.update)
        log.info("grpc_channel: %s", results["grpc_channel"])
    update_results("fuzz", results, args.out)
    log.info("-> %s", args.out)
    return 1 if any(r["crashes"] or r["hangs"] for r in results.values()) else 0


# -- soak ------------------------------------------------------------------------------------------
def best_ingest_rate(path: Path = ROOT / "bench" / "results" / "ingest.json") -> float:
    data = json.loads(path.read_text())
    return max(pt["faces_per_s"] for pt in data["cameras"])


class SoakLoad:
    """Simulated cameras sending base layers at ``rate`` faces per second in total (batches of
    ``batch``, at most ``window`` unacknowledged per stream); counts faces acknowledged."""

    def __init__(self, target: str, rate: float, cameras: int = 4, batch: int = 32, window: int = 4):
        self.target, self.rate, self.cameras, self.batch, self.window = target, rate, cameras, batch, window
        self.acked = 0
        self.rejected = 0
        self.errors: Counter[str] = Counter()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        from bench.ingest import payloads

        bases = payloads(500)
        await asyncio.gather(*[self._camera(f"soak-{c}", bases) for c in range(self.cameras)])

    async def _camera(self, camera: str, bases: list[bytes]) -> None:
        import grpc

        from facewire.v1 import ingest_pb2 as pb

        period = self.batch * self.cameras / self.rate
        n = 0
        next_t = time.monotonic()
        while not self.stop.is_set():
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    call = channel.stream_stream("/facewire.v1.FaceIngest/Stream", request_serializer=lambda b: b,
                                                 response_deserializer=pb.ServerMessage.FromString)(
                        metadata=(("x-camera-id", camera), ("authorization", f"Bearer {TOKEN}")))
                    slots = asyncio.Semaphore(self.window)

                    async def reader() -> None:
                        async for msg in call:
                            if msg.WhichOneof("kind") == "ack":
                                self.acked += len(msg.ack.face_ids)
                                self.rejected += len(msg.ack.rejected)
                                slots.release()

                    task = asyncio.create_task(reader())
                    while not self.stop.is_set():
                        next_t += period
                        delay = next_t - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        else:
                            next_t = time.monotonic()  # behind: no burst to catch up
                        await slots.acquire()
                        now = int(time.time() * 1000)
                        obs = [pb.FaceObservation(face_id=f"{camera}-{n + i}", camera_id=camera, capture_time_ms=now,
                                                  box=pb.Box(x1=10, y1=20, x2=110, y2=140),
                                                  quality=pb.Quality(probability=0.99, face_size=100),
                                                  base_layer=bases[(n + i) % len(bases)], format_version=1,
                                                  feature_backend="dlib-resnet-128", track_id=f"t{(n + i) // 8}")
                               for i in range(self.batch)]
                        n += self.batch
                        await call.write(pb.EdgeMessage(observations=pb.ObservationBatch(observations=obs))
                                         .SerializeToString())
                    await call.done_writing()
                    await asyncio.wait_for(task, 30)
            except Exception as e:  # a soak goes on; what went wrong is counted and reported
                self.errors[type(e).__name__] += 1
                await asyncio.sleep(1.0)


def redis_figures(client) -> dict:
    """Keys, memory and faces in Redis (storage layout 2): ``face_keys`` counts face records (and
    tombstones) in the record hashes, ``faces_index`` the entries of the all-faces time index."""
    info = client.info("memory")
    face_keys = sum(int(client.hlen(k)) for k in client.scan_iter(match=f"{PREFIX}:r:*", count=10000))
    faces_index = sum(int(client.zcard(k)) for k in client.scan_iter(match=f"{PREFIX}:ix:{{g:*", count=10000))
    return {"keys": int(client.dbsize()), "face_keys": face_keys, "used_memory_mb": round(info["used_memory"] / 2**20, 1),
            "faces_index": faces_index, "events": int(client.xlen(f"{PREFIX}:events"))}


INDEX_GAUGES = {"faceserver_search_index_faces": "index_faces", "faceserver_search_index_rows": "index_rows",
                "faceserver_search_index_bytes": "index_mb", "faceserver_search_index_waiting": "index_waiting"}


def index_figures(server) -> dict:
    """The server's search-index gauges (``GET /metrics``): faces, rows, MB, faces waiting for their log entry."""
    status, body = server.get("/metrics", timeout=10)
    out = {}
    if status == 200:
        for line in body.decode().splitlines():
            name, _, value = line.partition(" ")
            if name in INDEX_GAUGES:
                v = float(value)
                out[INDEX_GAUGES[name]] = round(v / 2**20, 1) if name.endswith("_bytes") else int(v)
    return out


async def _soak(work: Path, minutes: float, rate: float, retention_s: int, image_every_s: float, progress,
                partial) -> dict:
    redis = RedisProcess(work / "redis", persist=False)
    redis.start()
    sweep_s = min(60, max(5, retention_s // 4))
    server = ServerProcess(work / "server", redis.url, FACESERVER_RETENTION_S=str(retention_s),
                           FACESERVER_SWEEP_INTERVAL_S=str(sweep_s),
                           FACESERVER_LOG_LEVEL="WARNING")
    camera = CameraProcess(seed=7)
    agent = AgentProcess(work / "agent", server.grpc_target, [("edge-cam", camera.url)])
    rclient = redis.client()
    try:
        server.start()
        camera.start()
        agent.start()
        await asyncio.to_thread(agent.wait_for, "acknowledged", 1, 300)
        load = SoakLoad(server.grpc_target, rate)
        load_task = asyncio.create_task(load.run())
        images: Counter[str] = Counter()
        stop_images = asyncio.Event()

        async def requester() -> None:
            rng = random.Random(0)
            i = 0
            while not stop_images.is_set():
                i += 1
                if i % 2:
                    ids = newest_faces(rclient, 5, camera="edge-cam")
                    layer = "full"
                else:
                    ids = newest_faces(rclient, 200)
                    layer = "base"
                if ids:
                    face = rng.choice(ids)
                    status = await asyncio.to_thread(server.image, face, layer)
                    images[f"{layer}:{status}"] += 1
                try:
                    await asyncio.wait_for(stop_images.wait(), image_every_s)
                except asyncio.TimeoutError:
                    pass

        req_task = asyncio.create_task(requester())
        await asyncio.sleep(5)  # the streams are up: start figures from here
        start = {"rss_server_mb": server.rss_mb(), "rss_edge_mb": agent.rss_mb(), **redis_figures(rclient)}
        per_minute: list[dict] = []
        acked_prev, t_prev = load.acked, time.monotonic()
        t0 = t_prev
        acked_at: list[tuple[float, int]] = [(t0, load.acked)]
        for m in range(int(round(minutes * 60 / 60)) or 1):
            end = t0 + 60 * (m + 1) if minutes >= 1 else t0 + 60 * minutes
            while time.monotonic() < end:
                await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
                acked_at.append((time.monotonic(), load.acked))
            now = time.monotonic()
            point = {"minute": m + 1, "faces_per_s": round((load.acked - acked_prev) / (now - t_prev), 1),
                     "rss_server_mb": round(server.rss_mb(), 1), "rss_edge_mb": round(agent.rss_mb(), 1),
                     **redis_figures(rclient), **await asyncio.to_thread(index_figures, server),
                     "images": dict(images)}
            per_minute.append(point)
            acked_prev, t_prev = load.acked, now
            if progress:
                progress(point)
            if partial:
                partial({"complete": False, "minutes_done": m + 1, "per_minute": per_minute})
        elapsed = time.monotonic() - t0
        stop_images.set()
        load.stop.set()
        await asyncio.wait_for(req_task, 60)
        await asyncio.wait_for(load_task, 60)
        end_fig = {"rss_server_mb": server.rss_mb(), "rss_edge_mb": agent.rss_mb(), **redis_figures(rclient)}
        t_end = acked_at[-1][0]
        window = [n for t, n in acked_at if t >= t_end - retention_s]
        # faces whose record may still exist: those acknowledged within the retention period, plus
        # those the retention sweep has not reached yet (it runs every `sweep_s`: layout 2 deletes
        # expired records by sweeping, there is no key TTL), plus the edge's and the first sample's
        within_retention = acked_at[-1][1] - (window[0] if window else 0)
        face_bound = (int(within_retention * 1.05) + int(rate * (5 + sweep_s)) + agent.counter("acknowledged")
                      + 100)
        return {
            "minutes": round(elapsed / 60, 2), "target_faces_per_s": round(rate, 1),
            "faces_per_s": round((load.acked - acked_at[0][1]) / elapsed, 1),
            "faces_per_s_by_minute": [p["faces_per_s"] for p in per_minute],
            "slowest_over_fastest_minute": round(min(p["faces_per_s"] for p in per_minute)
                                                 / max(max(p["faces_per_s"] for p in per_minute), 1e-9), 3),
            "rss_start_mb": {"server": round(start["rss_server_mb"], 1), "edge": round(start["rss_edge_mb"], 1)},
            "rss_end_mb": {"server": round(end_fig["rss_server_mb"], 1), "edge": round(end_fig["rss_edge_mb"], 1)},
            "redis_start": {k: start[k] for k in ("keys", "face_keys", "used_memory_mb", "faces_index", "events")},
            "redis_end": {k: end_fig[k] for k in ("keys", "face_keys", "used_memory_mb", "faces_index", "events")},
            "retention_s": retention_s, "sweep_interval_s": sweep_s, "face_keys_allowed_by_retention": face_bound,
            "redis_within_retention": end_fig["face_keys"] <= face_bound,
            "images": dict(images), "rejected": load.rejected, "stream_errors": dict(load.errors),
            "edge": {k: agent.status().get(k) for k in ("observations", "acknowledged", "spooled", "uploads_ok",
                                                        "reconnects", "store_errors")},
            "per_minute": per_minute, "complete": True,
        }
    finally:
        agent.stop()
        camera.stop()
        server.stop()
        redis.stop()


def cmd_soak(args: argparse.Namespace) -> int:
    rate = args.rate or best_ingest_rate() / 2
    log.info("soak: %.1f minutes at %.0f faces/s (half the best rate in bench/results/ingest.json), "
             "retention %d s", args.minutes, rate, args.retention_s)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        result = asyncio.run(_soak(Path(tmp), args.minutes, rate, args.retention_s, args.image_every_s,
                                   lambda p: log.info("minute %d: %s", p["minute"], p),
                                   lambda partial: update_results("soak", {"minutes": args.minutes, **partial},
                                                                  args.out)))
    update_results("soak", result, args.out)
    log.info("soak: %.1f faces/s (target %.0f), RSS server %s -> %s MB, edge %s -> %s MB, Redis face keys %d "
             "(allowed %d) -> %s", result["faces_per_s"], rate, result["rss_start_mb"]["server"],
             result["rss_end_mb"]["server"], result["rss_start_mb"]["edge"], result["rss_end_mb"]["edge"],
             result["redis_end"]["face_keys"], result["face_keys_allowed_by_retention"], args.out)
    return 0


# -- privacy ---------------------------------------------------------------------------------------
def _pieces(value: bytes, size: int) -> list[bytes]:
    """``value`` cut into ``size``-byte pieces (a piece found in a file is a copy of part of it)."""
    return [value[i:i + size] for i in range(0, max(1, len(value) - size + 1), size)]


def scan_files(folders: dict[str, Path], needles: dict[str, list[bytes]]) -> dict[str, int]:
    """``folder label/file name`` -> how many needle pieces its bytes contain (files with none left out)."""
    out: dict[str, int] = {}
    for label, folder in folders.items():
        for f in sorted(folder.rglob("*")):
            if not f.is_file():
                continue
            try:
                data = f.read_bytes()
            except OSError:  # a temporary file renamed away meanwhile
                continue
            n = sum(piece in data for pieces in needles.values() for piece in pieces)
            if n:
                out[f"{label}/{f.relative_to(folder)}"] = n
    return out


def varied_camera_frames(folder: Path, rounds: int = 4, seed: int = 0) -> list[Path]:
    """JPEG frames of the sample people walking past a camera, ``rounds`` times, each pass at its own
    height and brightness (``CameraProcess`` repeats the same frames, so a person's faces in two
    rounds are often byte-identical and an erased face's bytes would be found in a kept one)."""
    import cv2
    import numpy as np

    rng = random.Random(seed)
    people = sorted({p.parent.name: p for p in sorted(FACES.glob("*/*.jpg"))}.items())
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def write(frame) -> None:
        paths.append(folder / f"{len(paths):05d}.jpg")
        cv2.imwrite(str(paths[-1]), frame)

    for _ in range(rounds):
        order = people[:]
        rng.shuffle(order)
        for _name, path in order:
            face = cv2.imread(str(path))
            y, gain = rng.randrange(20, 90), rng.uniform(0.85, 1.15)
            face = np.clip(face.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            for i in range(15):
                frame = np.full((360, 640, 3), 90, np.uint8)
                frame[y:y + 250, 100 + 3 * i: 350 + 3 * i] = face
                write(frame)
            for _ in range(5):
                write(np.full((360, 640, 3), 90, np.uint8))
    return paths


class VariedCamera(CameraProcess):
    """``python -m testkit.camera images`` on :func:`varied_camera_frames`: an MJPEG camera at 10 frames/s."""

    def __init__(self, frames: list[Path]):
        super().__init__(images=frames)


def run_privacy(work: Path, faces: int = 9, identities: int = 3, timeout_s: float = 600.0, progress=None) -> dict:
    """Erase ``faces`` faces and ``identities`` identities (with the faces matched to them) on a real
    server, the redis-server it uses (the embedded configuration: AOF fsynced every second, RDB save
    points) and a real edge agent on a live camera, every setting at its default; then read every
    file the three write until none of the erased values is found.

    What is looked for: each erased face's base layer, its decoded feature (32-byte pieces: no file
    should hold one), its code in the server's search index (16 bytes, read from the index's own
    files before the erasure), its cached enhancement layer and its face crop at the edge (64-byte
    pieces, less those every JPEG or PNG shares with a face nobody erased), and each identity's name,
    notes and enrolled features. No storage key is set, so these values are written in plaintext: the
    run measures erasure, not encryption. The search index saves its files every 30 s here
    (``FACESERVER_HISTORY_SNAPSHOT_S``, 300 by default) so that they hold the faces before the erasure;
    what bounds their erasure is ``FACESERVER_COMPACT_AFTER_ERASE_S``, at its default.
    """
    import secrets as pysecrets

    import httpx
    import redis as redis_lib

    import numpy as np

    from analysis_server import records as rec
    from analysis_server.history import read_files
    from analysis_server.keys import Keys
    from analysis_server.records import face_hash
    from analysis_server.redis_server import EmbeddedRedis
    from facecodec import base_layer

    say = progress or (lambda m: None)
    keys = Keys(PREFIX)

    def stored_value(client, face_id: str) -> dict[str, bytes] | None:
        h = face_hash(face_id)
        v = client.hget(keys.records(rec.bucket_of(h)), h)
        if v is None or rec.is_tombstone(v):
            return None
        return {"base": rec.unpack_record(v).base, "raw": v}

    def enh_key(face_id: str) -> str:
        return keys.enhancement(rec.bucket_of(face_hash(face_id)), face_id)
    redis_dir, edge_dir = work / "redis", work / "agent"
    embedded = EmbeddedRedis(redis_dir)
    url = embedded.start()
    r = redis_lib.Redis(unix_socket_path=embedded.socket_path)
    server = ServerProcess(work / "server", url, FACESERVER_CAMERA_TOKENS=json.dumps({"cam-1": TOKEN}),
                           FACESERVER_HISTORY_SNAPSHOT_S="30")
    camera = VariedCamera(varied_camera_frames(work / "frames"))
    agent = AgentProcess(edge_dir, server.grpc_target, [("cam-1", camera.url)])
    started: list = []
    api = None
    try:
        server.start()
        started.append(server)
        api = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", headers={"X-API-Key": API_KEY}, timeout=60)
        # The photo the simulated camera shows of each person (testkit/camera.py: the last one), so it matches.
        people = sorted({p.parent.name: p for p in sorted(FACES.glob("*/*.jpg"))}.items())
        enrolled: dict[str, dict] = {}
        for name, photo in people[:identities]:
            label = f"{name.replace('_', ' ')} privacy-bench {pysecrets.token_hex(4)}"
            notes = f"seen at gate {pysecrets.token_hex(6)}"
            iid = api.post("/identities", json={"name": label, "notes": notes}).json()["identity_id"]
            r_img = api.post(f"/identities/{iid}/images", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
            r_img.raise_for_status()
            enrolled[iid] = {"name": label, "notes": notes}
        say(f"enrolled {len(enrolled)} identities")
        camera.start()
        started.append(camera)
        agent.start()
        started.append(agent)

        def listed(**query) -> list[str]:
            out, cursor = [], None
            while True:
                page = api.get("/faces", params={"limit": 500, **query, **({"cursor": cursor} if cursor else {})})
                page.raise_for_status()
                out += [f["face_id"] for f in page.json()["items"]]
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    return out

        def stored(f: str) -> dict[str, bytes] | None:
            return stored_value(r, f)

        def matched() -> dict[str, list[str]]:
            return {i: listed(identity=i) for i in enrolled}

        def unmatched() -> list[str]:
            return listed(matched="false")

        # Faces erased one by one are chosen with a base layer no other face has (two passes of one
        # person may still give the same bytes), and an identity's erasure takes every face matched
        # to it. The camera stops first: no new faces while the files are read.
        def unique_unmatched() -> list[str]:
            ids = unmatched()
            bases = [stored(f)["base"] for f in ids]
            return [f for f, b in zip(ids, bases) if bases.count(b) == 1]

        wait_until(lambda: all(matched().values()) and len(unique_unmatched()) >= faces + 2, timeout=timeout_s,
                   what=f"{faces + 2} distinct unmatched faces and one face of each identity", interval=1.0)
        camera.stop()
        time.sleep(3.0)  # the agent sends the faces of its last tracks
        by_identity = matched()
        direct = unique_unmatched()[:faces]
        erased = direct + [f for ids in by_identity.values() for f in ids]
        kept = [f for f in listed() if f not in erased]
        say(f"{len(direct)} faces to erase one by one, {len(erased) - len(direct)} through their identity, "
            f"{len(kept)} kept")
        for f in erased + kept[:2]:  # the edge uploads each enhancement layer; the server caches it
            status = api.get(f"/faces/{f}/image", params={"layer": "full"}).status_code
            if status != 200:
                raise RuntimeError(f"layer=full of face {f} answered {status}")
        db = sqlite3.connect(edge_dir / "data" / "texture.sqlite3")
        try:
            crops = {f: bytes(c) for f, c in db.execute("SELECT face_id, crop FROM texture")}
        finally:
            db.close()  # an open reader would hold the edge's truncating checkpoint back
        # The search index's files, once they hold every face (the server saves them every 30 s here).
        index_dir = work / "server" / "data" / "history" / PREFIX

        def index_files():
            try:
                return read_files(index_dir, PREFIX)
            except (OSError, ValueError, KeyError, RuntimeError):  # not written yet, or being replaced
                return None

        def indexed_all() -> bool:
            index = index_files()
            return index is not None and all(index.codes_of(face_hash(f)) for f in erased + kept)

        wait_until(indexed_all, timeout=180, what="the search index's files to hold every face", interval=2.0)
        index = index_files()
        # Pieces a kept face shares (a JPEG's or PNG's tables, a repeated frame, one person's code) are
        # not evidence.
        shared = b"\0".join([v for f in kept for v in (stored(f)["raw"], r.get(enh_key(f)) or b"",
                                                         crops.get(f, b""), *index.codes_of(face_hash(f)))])
        needles: dict[str, list[bytes]] = {}
        for f in erased:
            h = stored(f)
            feature = base_layer.decode(h["base"]).feature.astype(np.float32).tobytes()
            needles[f"{f}:base"] = [h["base"]] if h["base"] not in shared else []
            needles[f"{f}:feature"] = [p for p in _pieces(feature, 32) if p not in shared]
            needles[f"{f}:code"] = [c for c in index.codes_of(face_hash(f)) if c not in shared]
            needles[f"{f}:enhancement"] = [p for p in _pieces(r.get(enh_key(f)), 48) if p not in shared]
            needles[f"{f}:crop"] = [p for p in _pieces(crops[f], 64) if p not in shared]
        for iid, info in enrolled.items():
            needles[f"{iid}:name"] = [info["name"].encode()]
            needles[f"{iid}:notes"] = [info["notes"].encode()]
            needles[f"{iid}:enrolled"] = [p for v in r.hgetall(keys.identity_features(iid)).values()
                                          for p in _pieces(v, 32)]
        folders = {"redis": redis_dir, "server": work / "server", "edge": edge_dir}
        # The server compacts once FACESERVER_COMPACT_AFTER_ERASE_S after it starts; erasing before that
        # would join its batch and look faster than an erasure on a server that has run a while.
        wait_until(lambda: (redis_dir / "faces.rdb").exists(), timeout=180, what="the start-up compaction")
        time.sleep(2.0)  # the AOF is fsynced every second
        before = scan_files(folders, needles)
        say(f"before erasure: {before}")

        rdb = redis_dir / "faces.rdb"
        rdb_saved = rdb.stat().st_mtime
        t0 = time.monotonic()
        for f in direct:
            api.delete(f"/faces/{f}").raise_for_status()
        for iid in enrolled:
            api.delete(f"/identities/{iid}").raise_for_status()
        erased_at = time.monotonic()
        found = scan_files(folders, needles)
        clean_at: dict[str, float] = {}  # file -> seconds after the last erasure when it held none
        while True:
            now = round(time.monotonic() - erased_at, 1)
            clean_at.update({f: now for f in before if f not in found and f not in clean_at})
            if not found or time.monotonic() - erased_at > timeout_s:
                break
            time.sleep(0.5)
            found = scan_files(folders, needles)
        gone_after = time.monotonic() - erased_at
        say(f"{'gone' if not found else 'still found'} {gone_after:.1f} s after the last erasure: {found}")
        # The compaction saves the RDB snapshot after the AOF rewrite: it must be clean too.
        wait_until(lambda: rdb.stat().st_mtime > rdb_saved, timeout=120, what="the RDB snapshot after the erasure")
        found = found or scan_files(folders, needles)
        kept_ok = all(api.get(f"/faces/{f}").status_code == 200 for f in kept[:2])
        return {"erased_faces": len(erased), "erased_faces_by_identity": len(erased) - len(direct),
                "erased_identities": len(enrolled), "bytes_found": found,
                "seconds_to_gone": round(gone_after, 1) if not found else None,
                "seconds_to_erase": round(erased_at - t0, 2), "found_before_erasure": before,
                "seconds_to_gone_by_file": clean_at,
                "faces_kept": len(kept),
                "values_looked_for": {"pieces": sum(len(v) for v in needles.values()),
                                      "faces_with_nothing_unique": sum(not any(needles.get(f"{f}:{k}") for k in (
                                          "base", "feature", "code", "enhancement", "crop")) for f in erased),
                                      "kinds": ["base layer", "feature", "search-index code", "enhancement layer",
                                                "edge crop (PNG)", "identity name", "identity notes",
                                                "enrolled feature"]},
                "kept_faces_still_served": kept_ok,
                "settings": "defaults (FACESERVER_COMPACT_AFTER_ERASE_S=60, EDGE wipes at once after a drop) but "
                            "FACESERVER_HISTORY_SNAPSHOT_S=30 (the search index's files hold the faces sooner); "
                            "no storage keys, so every value is on disk in plaintext until erased",
                "files_scanned": sorted(str(p.relative_to(work)) for d in folders.values() for p in d.rglob("*")
                                        if p.is_file())}
    finally:
        if api is not None:
            api.close()
        for p in reversed(started):
            p.stop()
        r.close()
        embedded.stop()


def cmd_privacy(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        result = run_privacy(Path(tmp), args.faces, args.identities, progress=lambda m: log.info("%s", m))
    update_results("privacy", result, args.out)
    log.info("privacy: %d faces (%d through their identity) and %d identities erased; found afterwards: %s; "
             "gone %s s after the last erasure -> %s", result["erased_faces"], result["erased_faces_by_identity"],
             result["erased_identities"], result["bytes_found"] or "nothing", result["seconds_to_gone"], args.out)
    return 0 if not result["bytes_found"] and result["kept_faces_still_served"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("restarts", help="SIGKILL the server and Redis while edge agents stream")
    r.add_argument("--agents", type=int, default=3)
    r.add_argument("--server-kills", type=int, default=3)
    r.add_argument("--redis-kills", type=int, default=1)
    r.add_argument("--outage-s", type=float, default=3.0, help="least time each part stays down")
    r.set_defaults(func=cmd_restarts)
    f = sub.add_parser("fuzz", help="mutation fuzzing of every decoder and of the gRPC message handling")
    f.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    f.add_argument("--channel-inputs", type=int, default=500, help="mutants sent over real gRPC streams")
    f.add_argument("--targets", default="base_layer,enhancement,container,grpc_messages")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_fuzz)
    s = sub.add_parser("soak", help="long ingest at half the best rate, image requests mixed in")
    s.add_argument("--minutes", type=float, default=30)
    s.add_argument("--rate", type=float, default=0, help="faces per second (default: half of ingest.json's best)")
    s.add_argument("--retention-s", type=int, default=120, help="server retention, so a steady state shows")
    s.add_argument("--image-every-s", type=float, default=1.0)
    s.set_defaults(func=cmd_soak)
    v = sub.add_parser("privacy", help="erase faces and identities; read every file until none of their bytes is left")
    v.add_argument("--faces", type=int, default=9, help="faces erased one by one (DELETE /faces)")
    v.add_argument("--identities", type=int, default=3, help="identities erased, with the faces matched to them")
    v.set_defaults(func=cmd_privacy)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
