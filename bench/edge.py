"""``python -m bench.edge``: what the edge costs on what a site sees; results in ``bench/results/edge.json``.

Sections (each a key of the results file; top-level keys summarise them):

- ``per_face``: per-face stage costs (process CPU time) on the committed LFW sample photos (250x250, one face
  each), one core: detection, alignment, descriptor, base-layer encoding, enhancement encoding. Keeps ``total_ms``
  (every stage a sent face always costs), ``feature_ms`` (the descriptor) and ``ratio`` = total / feature.
- ``runtimes``: the descriptor and MTCNN's three networks run by PyTorch (where installed), ONNX Runtime
  and OpenVINO on one core, on the same inputs (process CPU time): why OpenVINO is the default.
- ``clips``: one camera's analysis exactly as the agent runs it (:class:`edge_agent.agent.CameraWorker`:
  motion gate, detection in the changed regions, alignment, descriptor, tracker, base layer, texture and
  spool), fed the JPEG frames of synthetic clips (``bench/clips.py``: LFW test people walking over a
  real background texture, 0-3 at a time, with empty stretches) at 640x480 and 1280x720, and a static
  scene. Per frame: process CPU, and wall time per stage. ``fps_1core`` = frames with 1-3 faces
  analysed per CPU second; ``static_cores`` = the CPU a static scene costs at 10 frames/s.
- ``tracking``: the ``passing`` clip (120 test people passing one spot back to back) through the same
  worker; every observation is matched to the person drawn there: ``mixed_tracks`` (tracks whose
  observations show more than one person) and ``people_missed`` (people never observed).
- ``live``: the real agent process (``python -m edge_agent``) on 1 and 4 live MJPEG cameras (the 720p
  scene clip at 10 frames/s, ``python -m testkit.camera clip``), streaming to a real server through a TCP
  proxy that counts bytes both ways: the agent's CPU (cores) and RSS, frames analysed per second, and
  wire bytes per face (every byte of the stream both ways, HTTP/2 and gRPC framing and acks included,
  divided by the faces acknowledged). Camera processes, server and Redis share the machine.

Medians resist the other jobs of a shared machine; the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SAMPLE = ROOT / "tests" / "data" / "faces"
SIZES = {"640x480": (480, 640), "1280x720": (720, 1280)}

log = logging.getLogger("bench.edge")


def _ms(t0: float) -> float:
    """CPU milliseconds of this process since ``t0`` (a ``time.process_time()``): what a stage costs on one
    core, whatever else the shared machine runs (the runtime's worker thread is this process's too)."""
    return (time.process_time() - t0) * 1000.0


def _median(values) -> float | None:
    return round(statistics.median(values), 2) if values else None


# -- per face -------------------------------------------------------------------------------------
def per_face(codec: str = "jpeg", quality: int = 75) -> dict:
    from facecodec import base_layer, enhancement
    from facecodec.frontend import FaceFrontEnd
    from facecodec.frontend.detect import MtcnnDetector, pick_central
    from facecodec.images import load_rgb

    fe = FaceFrontEnd("dlib-resnet-128", detector=MtcnnDetector(min_face_size=40))
    photos = [load_rgb(p) for p in sorted(SAMPLE.glob("*/*.jpg"))]
    warm = fe.analyze_main(photos[0])
    enhancement.encode(warm.chip, base_layer.encode(warm.feature, warm.backend), codec, quality)
    stages: dict[str, list[float]] = {k: [] for k in ("detection", "alignment", "feature", "base_encode",
                                                      "enhancement_encode")}
    base_bytes, body_bytes = [], []
    for image in photos:
        t = time.process_time()
        det = pick_central(fe.detector.detect(image), image.shape)
        stages["detection"].append(_ms(t))
        if det is None:
            continue
        t = time.process_time()
        chip = fe.backend.align(image, det)
        stages["alignment"].append(_ms(t))
        t = time.process_time()
        feature = fe.backend.embed([chip])[0]
        stages["feature"].append(_ms(t))
        t = time.process_time()
        base = base_layer.encode(feature, fe.backend.name)
        stages["base_encode"].append(_ms(t))
        t = time.process_time()
        enhancement.encode(chip, base, codec, quality)
        stages["enhancement_encode"].append(_ms(t))
        base_bytes.append(len(base))
        body_bytes.append(len(base_layer.wire_body(base)))
    med = {k: _median(v) for k, v in stages.items()}
    total = round(sum(med[k] for k in ("detection", "alignment", "feature", "base_encode")), 2)
    return {"what": "per face, one core, 36 committed LFW photos (250x250), MTCNN min face 40",
            "stages_ms": med, "total_ms": total, "feature_ms": med["feature"], "ratio": round(total / med["feature"], 3),
            "base_bytes_per_face": round(statistics.fmean(base_bytes), 2),
            "base_body_bytes_per_face": round(statistics.fmean(body_bytes), 2),  # what facewire.v2 carries
            "enhancement_codec": f"{codec}:q{quality}"}


# -- runtimes -------------------------------------------------------------------------------------
def runtimes(repeat: int = 20) -> dict:
    """Median ms of each network on one core, per runtime, on the same inputs."""
    import zipfile

    from facecodec import zoo
    from facecodec.runtime import Network

    rng = np.random.default_rng(0)
    mtcnn = zoo.model_path(zoo.newest("detector").name)
    with zipfile.ZipFile(mtcnn) as z:
        onnx = {m: z.read(f"{m}.onnx") for m in ("pnet", "rnet", "onet")}
    onnx["descriptor"] = zoo.model_path(zoo.newest("descriptor", "dlib-resnet-128").name).read_bytes()
    inputs = {"pnet": rng.uniform(-1, 1, (1, 3, 216, 384)).astype(np.float32),
              "rnet": rng.uniform(-1, 1, (300, 3, 24, 24)).astype(np.float32),
              "onet": rng.uniform(-1, 1, (20, 3, 48, 48)).astype(np.float32),
              "descriptor": rng.integers(0, 256, (1, 150, 150, 3), dtype=np.uint8)}

    def timed(fn) -> float:
        fn()
        out = []
        for _ in range(repeat):
            t = time.process_time()
            fn()
            out.append(_ms(t))
        return _median(out)

    out: dict[str, dict] = {}
    for runtime in ("openvino", "onnxruntime"):
        try:
            out[runtime] = {k: timed(lambda n=Network(onnx[k], k, runtime), x=inputs[k]: n(x)) for k in onnx}
        except ImportError as e:
            out[runtime] = {"unavailable": str(e)}
    try:
        import torch

        torch.set_num_threads(1)
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        from facecodec.frontend import dlib_torch

        nets = {"pnet": PNet().eval(), "rnet": RNet().eval(), "onet": ONet().eval(), "descriptor": dlib_torch.load()}
        with torch.inference_mode():
            out["pytorch"] = {k: timed(lambda n=nets[k], x=torch.from_numpy(inputs[k]): n(x)) for k in nets}
    except ImportError as e:
        out["pytorch"] = {"unavailable": str(e)}
    out["inputs"] = {k: list(v.shape) for k, v in inputs.items()}
    return out


# -- clips through the camera worker ---------------------------------------------------------------
class ClipRun:
    """One camera worker of a real agent (stores in a temporary folder, no stream) fed a clip's frames."""

    def __init__(self, folder: Path, fps: float, **camera: object):
        from edge_agent.agent import EdgeAgent
        from edge_agent.settings import EdgeSettings

        self.tmp = tempfile.TemporaryDirectory(prefix="bench-edge-")
        settings = EdgeSettings(server="127.0.0.1:9", token="bench-token", data_dir=Path(self.tmp.name),
                                cameras=[{"id": "bench", "source": str(folder), **camera}], sample_fps=fps, cores=1)
        self.agent = EdgeAgent(settings)
        self.worker = self.agent.workers[0]
        self.agent.pipelines[0].warm_up()
        self.emitted: list[tuple[str, int, tuple]] = []  # (track id, frame index, box)
        emit = self.worker._emit

        def recording(emission) -> None:
            face, frame_index = emission.candidate.payload[:2]
            self.emitted.append((emission.track_id, frame_index, face.detection.box))
            emit(emission)

        self.worker._emit = recording

    def feed(self, folder: Path, fps: float) -> list[float]:
        """Process CPU ms per frame, every frame of the folder in order (``wall_ms`` = the frame index)."""
        from edge_agent.sources import Frame

        cpu = []
        for i, path in enumerate(sorted(folder.glob("frame_*.jpg"))):
            frame = Frame(i, i / fps, i, jpeg=path.read_bytes())
            t = time.process_time()
            self.worker._frame(frame)
            cpu.append((time.process_time() - t) * 1000.0)
        self.worker._emit_all(self.worker.tracker.flush())
        return cpu

    def close(self) -> None:
        self.agent.spool.close()
        self.agent.texture.close()
        self.tmp.cleanup()


def clip_costs(work: Path, seconds: float) -> dict:
    from bench import clips

    people = clips.load_people(60, seed=1)
    out = {}
    for label, (h, w) in SIZES.items():
        folder = work / f"scene-{label}"
        truth = clips.write(clips.scene(people, (h, w), seconds, 10.0, face_px=100 * h / 720, seed=1), folder, 10.0)
        run = ClipRun(folder, 10.0)
        cpu = run.feed(folder, 10.0)
        stage_s = dict(run.agent.pipelines[0].clock.seconds)
        counters = run.agent.counters.snapshot()
        run.close()
        n_faces = [len(f) for f in truth["frames"]]
        busy = [c for c, n in zip(cpu, n_faces) if 1 <= n <= 3]
        by_count = {str(k): _median([c for c, n in zip(cpu, n_faces) if n == k]) for k in range(4)}
        static = work / f"static-{label}"
        clips.write(((clips.background((h, w), seed=1), []) for _ in range(120)), static, 10.0)
        srun = ClipRun(static, 10.0)
        scpu = srun.feed(static, 10.0)[20:]  # after the first frames (the background is learnt from the first)
        srun.close()
        frames = len(cpu)
        out[label] = {
            "frames": frames, "frames_with_1_to_3_faces": len(busy),
            "cpu_ms_per_frame": {"median_1_to_3_faces": _median(busy), "by_faces_drawn": by_count,
                                 "mean_all": round(statistics.fmean(cpu), 2)},
            "fps_1core": round(1000.0 / statistics.fmean(busy), 2) if busy else None,
            "stage_ms_per_frame": {k: round(v * 1000.0 / frames, 2) for k, v in sorted(stage_s.items())},
            "frames_still": counters.get("frames_still", 0), "frames_analysed": counters.get("frames_analysed", 0),
            "faces_found": counters.get("faces", 0), "observations": counters.get("observations", 0),
            "faces_per_s_per_core": round(counters.get("faces", 0) / (sum(cpu) / 1000.0), 2),
            "static_cpu_ms_per_frame": _median(scpu),
            "static_cores_at_10fps": round(statistics.fmean(scpu) * 10 / 1000.0, 4),
        }
    return out


def tracking(work: Path, people_count: int) -> dict:
    """The passing clip: every observation matched to the person drawn where it was seen."""
    from bench import clips

    people = clips.load_people(people_count, seed=2)
    folder = work / "passing"
    truth = clips.write(clips.passing(people, (720, 1280), seed=2), folder, 10.0)
    run = ClipRun(folder, 10.0)
    run.feed(folder, 10.0)
    emitted = list(run.emitted)
    run.close()
    per_track: dict[str, set] = {}
    unmatched = 0
    seen = set()
    for track, index, box in emitted:
        person = match(truth["frames"][index], box)
        if person is None:
            unmatched += 1
            continue
        per_track.setdefault(track, set()).add(person)
        seen.add(person)
    drawn = {f["index"] for frame in truth["frames"] for f in frame}
    return {"people": len(drawn), "frames": len(truth["frames"]), "observations": len(emitted),
            "tracks": len(per_track), "mixed_tracks": sum(len(p) > 1 for p in per_track.values()),
            "people_missed": len(drawn - seen), "observations_not_on_a_person": unmatched}


def match(faces: list[dict], box) -> int | None:
    """The person drawn nearest ``box`` in a frame (centre within half a face width), or None."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    best = None
    for f in faces:
        b = f["box"]
        d = np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy)
        if d <= (b[2] - b[0]) * 0.5 and (best is None or d < best[0]):
            best = (d, f["index"])
    return None if best is None else best[1]


# -- live ------------------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live(work: Path, cameras: int, seconds: float, clip: Path) -> dict:
    import subprocess
    import sys

    from testkit.processes import AgentProcess, RedisProcess, ServerProcess, clean_env, free_port
    from bench.tcp_proxy import TcpProxy

    redis = RedisProcess(work / f"redis-{cameras}", persist=False)
    redis.start()
    server = ServerProcess(work / f"server-{cameras}", redis.url)
    server.start()
    proxy = TcpProxy("127.0.0.1", server.grpc_port).start()
    ports = [free_port() for _ in range(cameras)]
    cams = [subprocess.Popen([sys.executable, "-m", "testkit.camera", "clip", str(p), str(clip)], cwd=ROOT,
                             env=clean_env(), stdout=subprocess.PIPE, text=True) for p in ports]
    agent = None
    try:
        for c in cams:
            if c.stdout.readline().strip() != "serving":
                raise RuntimeError("a camera did not start")
        agent = AgentProcess(work / f"agent-{cameras}", proxy.address,
                             [(f"cam-{i}", f"http://127.0.0.1:{p}/video.mjpg") for i, p in enumerate(ports)],
                             sample_fps=10.0, interval_s=5.0, EDGE_BATCH_LINGER_MS="2000")  # the default linger
        agent.start()
        agent.wait_for("frames", 20 * cameras, timeout=180)
        cpu0, t0, frames0 = _cpu_s(agent.proc.pid), time.monotonic(), agent.counter("frames")
        analysed0 = agent.counter("frames_analysed")
        bytes0 = dict(proxy.counters)
        acked0 = agent.counter("acknowledged")
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss.append(agent.rss_mb())
        elapsed = time.monotonic() - t0
        cores = (_cpu_s(agent.proc.pid) - cpu0) / elapsed
        frames = agent.counter("frames") - frames0
        analysed = agent.counter("frames_analysed") - analysed0
        acked = agent.counter("acknowledged") - acked0
        up = proxy.counters["bytes_up"] - bytes0.get("bytes_up", 0)
        down = proxy.counters["bytes_down"] - bytes0.get("bytes_down", 0)
        return {"cameras": cameras, "seconds": round(elapsed, 1), "agent_cores": round(cores, 3),
                "frames_per_s": round(frames / elapsed, 2), "frames_analysed_per_s": round(analysed / elapsed, 2),
                "analysed_fps_per_core": round(analysed / elapsed / cores, 2) if cores else None,
                "rss_mb": {"max": round(max(rss), 1), "median": round(statistics.median(rss), 1)},
                "faces_acknowledged": acked, "wire_bytes": {"edge_to_server": up, "server_to_edge": down},
                "wire_bytes_per_face": round((up + down) / acked, 2) if acked else None}
    finally:
        if agent is not None:
            agent.stop()
        for c in cams:
            c.kill()
            c.wait(10)
        proxy.close()
        server.stop()
        redis.kill()


def wire_full_batches(work: Path, clip: Path) -> dict:
    """Bytes per face when batches are full: an agent reads a clip folder while the server is down (its
    spool fills), then the server starts and the agent catches up in batches of 64 and exits. Every byte
    between them from then on (both ways, through the counting proxy: the connection, HTTP/2 and gRPC
    framing, Hello, acks, pings) over the faces acknowledged."""
    from testkit.processes import AgentProcess, RedisProcess, ServerProcess
    from bench.tcp_proxy import TcpProxy

    redis = RedisProcess(work / "redis-replay", persist=False)
    redis.start()
    server = ServerProcess(work / "server-replay", redis.url)
    proxy = None
    agent = None
    try:
        server.start()
        port = server.grpc_port
        server.stop()
        proxy = TcpProxy("127.0.0.1", port).start()
        # one observation every 0.4 s of a track: about three per person, so that the stream's one-off
        # costs (connection, headers, Hello) weigh on a few hundred faces
        agent = AgentProcess(work / "agent-replay", proxy.address, [("cam-0", str(clip))], exit_when_done=True,
                             sample_fps=10.0, interval_s=0.4, EDGE_BATCH_LINGER_MS="2000", EDGE_DRAIN_TIMEOUT_S="60")
        agent.start()
        agent.wait_for("sources_done", 1, timeout=600)
        spooled = agent.counter("observations")
        before = dict(proxy.counters)
        server.start()
        agent.wait_exit(timeout=600)
        acked = agent.counter("acknowledged")
        up = proxy.counters["bytes_up"] - before.get("bytes_up", 0)
        down = proxy.counters["bytes_down"] - before.get("bytes_down", 0)
        return {"observations_spooled": spooled, "faces_acknowledged": acked,
                "wire_bytes": {"edge_to_server": up, "server_to_edge": down},
                "wire_bytes_per_face": round((up + down) / acked, 2) if acked else None}
    finally:
        if agent is not None:
            agent.stop()
        if proxy is not None:
            proxy.close()
        server.stop()
        redis.kill()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the scene clips (clips section)")
    p.add_argument("--people", type=int, default=120, help="people in the passing clip (tracking section)")
    p.add_argument("--live-seconds", type=float, default=60.0, help="measurement window of each live run")
    p.add_argument("--skip", nargs="*", default=[], choices=("per_face", "runtimes", "clips", "tracking", "live"))
    p.add_argument("--out", type=Path, default=RESULTS / "edge.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from eval import provenance

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result: dict = {"load_average_1min": {"start": round(os.getloadavg()[0], 2)}}
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        work = Path(tmp)
        sections = {"per_face": per_face, "runtimes": runtimes,
                    "clips": lambda: clip_costs(work, args.seconds), "tracking": lambda: tracking(work, args.people)}
        for name, fn in sections.items():
            if name in args.skip:
                result[name] = previous.get(name)
                continue
            log.info("%s ...", name)
            result[name] = fn()
        if "live" in args.skip:
            result["live"] = previous.get("live")
        else:
            from bench import clips

            clip = work / "live-scene"
            clips.write(clips.scene(clips.load_people(60, seed=3), (720, 1280), 60, 10.0, seed=3), clip, 10.0)
            result["live"] = {str(n): live(work, n, args.live_seconds, clip) for n in (1, 4)}
            passing = work / "replay-passing"
            clips.write(clips.passing(clips.load_people(120, seed=4), (720, 1280), seed=4), passing, 10.0)
            result["live"]["full_batches"] = wire_full_batches(work, passing)
    result["load_average_1min"]["end"] = round(os.getloadavg()[0], 2)
    pf, clip720, tr, lv = result.get("per_face") or {}, (result.get("clips") or {}).get("1280x720", {}), \
        result.get("tracking") or {}, result.get("live") or {}
    summary = {
        "total_ms": pf.get("total_ms"), "feature_ms": pf.get("feature_ms"), "ratio": pf.get("ratio"),
        "fps_720p_1core": clip720.get("fps_1core"), "static_720p_cores": clip720.get("static_cores_at_10fps"),
        "rss_mb": {n: v["rss_mb"]["max"] for n, v in lv.items() if "rss_mb" in v} if lv else None,
        "wire_bytes_per_face": (lv.get("1") or {}).get("wire_bytes_per_face"),
        "wire_bytes_per_face_full_batches": (lv.get("full_batches") or {}).get("wire_bytes_per_face"),
        "base_bytes_per_face": pf.get("base_bytes_per_face"),
        "mixed_tracks": tr.get("mixed_tracks"), "people_missed": tr.get("people_missed"),
    }
    body = pf.get("base_body_bytes_per_face")  # what of the base layer travels (its header is in Hello)
    if body and summary["wire_bytes_per_face"]:
        summary["envelope_bytes_per_face"] = round(summary["wire_bytes_per_face"] - body, 2)
    if body and summary["wire_bytes_per_face_full_batches"]:
        summary["envelope_bytes_per_face_full_batches"] = round(summary["wire_bytes_per_face_full_batches"] - body, 2)
    result = {**summary, **result, "commit": provenance.commit(), "machine": provenance.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
