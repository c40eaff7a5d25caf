"""``python -m bench.history``: retrospective search and listing over 1e6 and 1e7 stored faces, memory,
index build and restart, and ingest on a 3-master Redis Cluster against one Redis.

``run`` (one size per ``--sizes`` entry, each on a fresh redis-server):

1. **Fill**: synthetic people from the base-layer model's distribution (its mean, PCA basis and
   scales), ``size / 10`` of them, each seen about ten times over the last 7 days on one of 16
   cameras: an observation is its person plus noise of norm 0.25, base-layer coded; 2 % of the
   people are enrolled (their faces carry a match). Faces are written by the server's own store
   (``FaceStore.store_batch``: the keys, script and values of the real write path; the gRPC and
   validation steps are left out of the fill).
2. **Memory**: Redis's ``used_memory`` after the fill less before, per face (records, every time
   index, counts, the change log and the events stream capped at 100,000 entries).
3. **Index build**: the server's search index (``analysis_server.history.History``, default settings)
   built from the change log as a replica with no files does: every record read, decoded, added;
   ``index_bytes_per_face`` is what it holds (codes, ids, hash, time and camera per face).
4. **Restart**: a real ``python -m analysis_server`` started on that Redis and the saved index files;
   ``restart_s`` is from its start to the first ``/search`` answered by the index.
5. **Search** over HTTP (``POST /search``, one request at a time): probes are new observations of
   stored people; windows of the last 24 hours and of 7 days; ``recall_at_10`` is the overlap of
   the first 10 hits with the first 10 of the exact scan (every stored face of the window decoded
   and compared here, within the server's threshold: what ``/search`` answered before the index).
6. **Listing** over HTTP (``GET /faces``, 50 a page) for each filter, from random points in the 7
   days (``until_ms``) and then one cursor page further.

``cluster``: ingest through a real server and simulated gRPC cameras (bench/ingest.py's) into a
3-master Redis Cluster and into one redis-server on the same cores, alternating, 3 runs each;
``ingest_ratio`` is the median of cluster/single rates; after 1e6 faces in the cluster,
``key_spread`` is (most keys on a node - fewest) / mean, with memory and CPU per node.

``compare``: IVF-PQ, IVF-SQ and HNSW at 1e6 faces of the same distribution (recall@10 with exact
re-ranking, latency, bytes per face), the measurement behind the index the server uses.

``bench/results/history.json`` holds exactly the figures the issue asks for; everything else
(commands, load average, machine, per-size details, the comparison) goes to
``bench/results/history_runs.json``. Numpy and FAISS run one thread, like the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROVENANCE_PATHS = ("analysis_server", "bench", "testkit", "facewire", "facecodec/base_layer.py")
API_KEY = "bench-api-key-0001"
TOKEN = "bench-camera-token"
PREFIX = "fs"
CAMERAS = 16
DAY_MS = 86_400_000
log = logging.getLogger("bench.history")


def model():
    from facecodec import base_layer

    return base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))


def people(n: int, seed: int) -> np.ndarray:
    return model().sample(n, np.random.default_rng(seed))


def noisy(centres: np.ndarray, rng, norm: float = 0.25) -> np.ndarray:
    e = rng.normal(size=centres.shape).astype(np.float32)
    return centres + norm * e / np.linalg.norm(e, axis=1, keepdims=True)


def _encode(features: np.ndarray) -> list[bytes]:
    from facecodec import base_layer

    return [base_layer.encode(f) for f in features]


class Plan:
    """Who is seen when and where: face i is person ``who[i]`` at ``t[i]`` on camera ``cam[i]``."""

    def __init__(self, n: int, now_ms: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.n, self.now = n, now_ms
        self.n_people = max(1, n // 10)
        self.who = rng.integers(0, self.n_people, n)
        # 7 days back from now, less 30 minutes (no face expires during the run)
        self.t = np.sort(rng.integers(now_ms - 7 * DAY_MS + 1_800_000, now_ms - 10_000, n))
        home = rng.integers(0, CAMERAS, self.n_people)
        self.cam = np.where(rng.random(n) < 0.7, home[self.who], rng.integers(0, CAMERAS, n))
        self.enrolled = rng.random(self.n_people) < 0.02
        self.seed = seed

    def chunks(self, size: int = 50_000):
        centres = people(self.n_people, self.seed + 1)
        rng = np.random.default_rng(self.seed + 2)
        for s in range(0, self.n, size):
            e = min(self.n, s + size)
            yield s, e, noisy(centres[self.who[s:e]], rng)


async def fill(url: str, plan: Plan, workers: int, progress) -> tuple[float, list[bytes]]:
    """Write every face of ``plan`` through FaceStore.store_batch; (seconds, base layers in order)."""
    from concurrent.futures import ProcessPoolExecutor

    from analysis_server.keys import Keys
    from analysis_server.redis_server import async_client
    from analysis_server.store import FaceStore, Match
    from analysis_server.validation import Observation

    client = async_client(url)
    store = FaceStore(client, Keys(PREFIX), 7 * 86400)
    await store.check_layout()
    for c in range(CAMERAS):
        await store.touch_camera(f"cam-{c:02d}", agent_version="bench.history")
    payloads: list[bytes] = []
    empty = np.zeros(0, np.float32)
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers) as pool:
        pending = None
        chunks = plan.chunks()
        for s, e, feats in chunks:
            parts = np.array_split(feats, workers * 4)
            coded = await asyncio.gather(*[loop.run_in_executor(pool, _encode, p) for p in parts])
            bases = [b for part in coded for b in part]
            payloads += bases
            if pending is not None:
                await pending
            obs = [Observation(f"h{i:08d}", f"cam-{int(plan.cam[i]):02d}", int(plan.t[i]),
                               (10.0, 20.0, 110.0, 140.0), 0.99, 100.0, False, f"t{i // 4}", bases[i - s],
                               "dlib-resnet-128", "", 0, empty) for i in range(s, e)]
            matches = [Match(f"id{int(plan.who[i]):07d}", 0.3, False) if plan.enrolled[plan.who[i]] else None
                       for i in range(s, e)]

            async def write(obs=obs, matches=matches):
                sem = asyncio.Semaphore(4)

                async def one(a: int) -> None:
                    async with sem:
                        out = await store.store_batch(obs[a: a + 512], matches[a: a + 512])
                        assert all(r == 1 for r in out), "a face was not stored"

                await asyncio.gather(*[one(a) for a in range(0, len(obs), 512)])

            pending = asyncio.ensure_future(write())
            progress(f"fill: {e:,} of {plan.n:,} ({e / (time.perf_counter() - t0):,.0f} faces/s)")
        await pending
    seconds = time.perf_counter() - t0
    await client.aclose()
    return seconds, payloads


def exact_top(payloads: list[bytes], plan: Plan, probes: np.ndarray, since: int, k: int, threshold: float) -> list:
    """For each probe, the ``k`` nearest stored faces captured at ``since`` or later (decoded base
    layers, Euclidean), within ``threshold``: [[(distance, face index)]]."""
    import faiss

    from facecodec import base_layer

    best: list[list[tuple[float, int]]] = [[] for _ in probes]
    first = int(np.searchsorted(plan.t, since))
    for s in range(first, plan.n, 100_000):
        e = min(plan.n, s + 100_000)
        x = np.stack([d.feature for d in base_layer.decode_many(payloads[s:e])]).astype(np.float32)
        d2, idx = faiss.knn(probes, x, min(k, len(x)))
        for q in range(len(probes)):
            best[q] = sorted(best[q] + [(float(np.sqrt(max(d, 0))), int(i) + s) for d, i in zip(d2[q], idx[q])])[:k]
    return [[(d, i) for d, i in row if d <= threshold] for row in best]


def start_server(url: str, data_dir: Path, **env) -> tuple[subprocess.Popen, int, float]:
    """A real server on ``url``: (process, HTTP port, seconds from start to its ready line)."""
    from testkit.processes import launch_server

    t0 = time.perf_counter()
    proc, _, http_port, _ = launch_server(url, data_dir, FACESERVER_API_KEYS=API_KEY,
                                          FACESERVER_CAMERA_TOKENS=json.dumps({"*": TOKEN}),
                                          FACESERVER_KEY_PREFIX=PREFIX, FACESERVER_REDIS_COMPACT="false", **env)
    return proc, http_port, time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2)


def measure_size(n: int, work: Path, queries: int, workers: int, say) -> dict:
    import httpx
    import redis as redis_lib

    from analysis_server.history import History
    from analysis_server.keys import Keys
    from analysis_server.redis_server import async_client
    from analysis_server.settings import ServerSettings
    from analysis_server.store import FaceStore
    from testkit.processes import RedisProcess, rss_mb

    defaults = ServerSettings()
    out: dict = {"stored": n, "load_avg_1min": {"start": round(os.getloadavg()[0], 2)}}
    redis = RedisProcess(work / "redis", persist=False)
    redis.start()
    client = redis_lib.Redis(host="127.0.0.1", port=redis.port, socket_timeout=600)
    proc = None
    try:
        base_mem = int(client.info("memory")["used_memory"])
        plan = Plan(n, int(time.time() * 1000))
        fill_s, payloads = asyncio.run(fill(redis.url, plan, workers, say))
        mem = int(client.info("memory")["used_memory"]) - base_mem
        out.update(fill_s=round(fill_s, 1), fill_faces_per_s=round(n / fill_s), redis_used_memory_mb=round(mem / 2**20, 1),
                   redis_bytes_per_face=round(mem / n, 1), redis_keys=int(client.dbsize()))
        say(f"{n:,} faces stored in {fill_s:.0f} s; Redis {mem / n:.0f} bytes a face")

        # -- the index a replica with no files builds from the change log
        data_dir = work / "server"

        async def build() -> dict:
            import faiss

            faiss.omp_set_num_threads(1)
            c = async_client(redis.url)
            store = FaceStore(c, Keys(PREFIX), defaults.retention_s)
            h = History(store, data_dir / "history" / PREFIX, defaults.history_nlist, defaults.history_pq_bytes,
                        defaults.history_nprobe, defaults.history_scan_codes, defaults.history_rerank)
            rss0 = rss_mb(os.getpid())
            t0 = time.perf_counter()
            await h.start()
            built = time.perf_counter() - t0
            rss1 = rss_mb(os.getpid())
            t0 = time.perf_counter()
            await h.save()
            saved = time.perf_counter() - t0
            r = {"index_build_s": round(built, 1), "index_faces": len(h.index), "index_save_s": round(saved, 1),
                 "index_bytes_per_face": round(h.index.nbytes() / n, 1),
                 "index_rss_mb": round(rss1 - rss0, 1),
                 "index_files_mb": round(sum(f.stat().st_size for f in (data_dir / "history").rglob("day-*.bin"))
                                         / 2**20, 1)}
            h.close()
            await c.aclose()
            return r

        out.update(asyncio.run(build()))
        say(f"index built in {out['index_build_s']} s, {out['index_bytes_per_face']} bytes a face")

        # -- a real server restarts on those files; search and listing over HTTP
        t0 = time.perf_counter()
        proc, http_port, ready_s = start_server(redis.url, data_dir)
        rng = np.random.default_rng(99)
        who = plan.who[rng.choice(n, queries, replace=False)]
        probes_raw = noisy(people(plan.n_people, plan.seed + 1)[who], rng)
        from facecodec import base_layer

        probes = np.stack([base_layer.decode(b).feature for b in _encode(probes_raw)]).astype(np.float32)
        api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", headers={"X-API-Key": API_KEY}, timeout=120)
        while True:
            r = api.post("/search", json={"probe": {"feature": probes[0].tolist()}, "limit": 1}).json()
            if r.get("index") == "faiss-ivf-pq":
                break
            time.sleep(0.05)
        out["restart_s"] = round(time.perf_counter() - t0, 1)
        out["restart_ready_line_s"] = round(ready_s, 1)
        out["server_rss_mb"] = round(rss_mb(proc.pid), 1)
        say(f"server restarted and searching from its index in {out['restart_s']} s")
        now = int(time.time() * 1000)
        points = []
        threshold = defaults.match_threshold
        for window, since in (("24h", now - DAY_MS), ("7d", now - 7 * DAY_MS)):
            truth = exact_top(payloads, plan, probes, since, 10, threshold)
            lat, recall, hits = [], [], []
            for q, p in enumerate(probes):
                body = {"probe": {"feature": p.tolist()}, "since_ms": since, "limit": 10}
                t = time.perf_counter()
                resp = api.post("/search", json=body)
                lat.append((time.perf_counter() - t) * 1000)
                got = [int(h["face_id"][1:]) for h in resp.json()["hits"]]
                want = [i for _, i in truth[q]]
                hits.append(len(want))
                if want:
                    recall.append(len(set(got) & set(want)) / len(want))
            points.append({"stored": n, "window": window, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                           "recall_at_10": round(float(np.mean(recall)), 4)})
            out.setdefault("search_details", {})[window] = {
                "queries": len(probes), "queries_with_hits": len(recall), "mean_exact_hits": round(float(np.mean(hits)), 2),
                "threshold": threshold}
            say(f"search {window}: {points[-1]}")
        out["points"] = points
        filters = {"none": {}, "camera": {"camera": "cam-03"}, "identity": None, "matched": {"matched": "true"},
                   "unmatched": {"matched": "false"}, "time_range": "range", "camera_and_time_range": "camera-range"}
        enrolled = np.nonzero(plan.enrolled)[0]
        listing = {}
        for name, f in filters.items():
            lat = []
            for j in range(25):
                until = int(plan.t[int(rng.integers(0, n))])
                if f is None:
                    q = {"identity": f"id{int(enrolled[j % len(enrolled)]):07d}"}
                elif f == "range":
                    q = {"since_ms": until - 3_600_000}
                elif f == "camera-range":
                    q = {"camera": f"cam-{j % CAMERAS:02d}", "since_ms": until - 3_600_000}
                else:
                    q = dict(f)
                params = {**q, "until_ms": until, "limit": 50}
                t = time.perf_counter()
                page = api.get("/faces", params=params)
                lat.append((time.perf_counter() - t) * 1000)
                nxt = page.json().get("next_cursor")
                if nxt:
                    t = time.perf_counter()
                    api.get("/faces", params={**params, "cursor": nxt})
                    lat.append((time.perf_counter() - t) * 1000)
            listing[name] = percentile(lat, 50)
        out["listing_p50_ms"] = listing
        say(f"listing p50 per filter: {listing}")
        api.close()
        out["load_avg_1min"]["end"] = round(os.getloadavg()[0], 2)
        return out
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        client.close()
        redis.stop()


def cmd_run(args) -> int:
    from eval import provenance

    say = lambda m: log.info("%s", m)  # noqa: E731
    details = {}
    for n in (int(float(s)) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-history-", dir=args.work) as tmp:
            details[str(n)] = measure_size(n, Path(tmp), args.queries, args.workers, say)
    largest = details[str(max(int(k) for k in details))]
    merge_results(args.out, {
        "points": [p for d in details.values() for p in d["points"]],
        "listing_p50_ms": largest["listing_p50_ms"],
        "redis_bytes_per_face": largest["redis_bytes_per_face"],
        "index_bytes_per_face": largest["index_bytes_per_face"],
        "restart_s": largest["restart_s"]},
        {"run": {"command": "python -m bench.history " + " ".join(sys.argv[1:]), "sizes": details,
                 "commit": provenance.commit(PROVENANCE_PATHS), "machine": provenance.machine(), "threads": 1}})
    return 0


def merge_results(out: Path, figures: dict, context: dict) -> None:
    """Update history.json (the issue's figures only) and history_runs.json (how they were made)."""
    keys = ("points", "listing_p50_ms", "redis_bytes_per_face", "index_bytes_per_face", "restart_s", "cluster")
    current = json.loads(out.read_text()) if out.exists() else {}
    current.update(figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: current[k] for k in keys if k in current}, indent=2) + "\n")
    runs = out.with_name(out.stem + "_runs.json")
    ctx = json.loads(runs.read_text()) if runs.exists() else {}
    ctx.update(context)
    runs.write_text(json.dumps(ctx, indent=2) + "\n")
    log.info("-> %s, %s", out, runs)


# -- the cluster ---------------------------------------------------------------------------------
def node_figures(nodes) -> list[dict]:
    out = []
    for n in nodes:
        c = n.client()
        try:
            cpu = c.info("cpu")
            out.append({"port": n.port, "keys": int(c.dbsize()),
                        "used_memory_mb": round(int(c.info("memory")["used_memory"]) / 2**20, 1),
                        "cpu_s": round(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), 2)})
        finally:
            c.close()
    return out


def cmd_cluster(args) -> int:
    from testkit.processes import RedisClusterProcess, RedisProcess, launch_server
    from bench.ingest import payloads, run_cameras
    from eval import provenance

    bases = payloads(1000)
    load0 = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=args.work) as tmp:
        work = Path(tmp)
        single = RedisProcess(work / "single", persist=False)
        cluster = RedisClusterProcess(work / "cluster", masters=3)
        single.start()
        cluster.start()
        servers = {}
        try:
            env = {"FACESERVER_API_KEYS": API_KEY, "FACESERVER_CAMERA_TOKENS": json.dumps({"*": TOKEN}),
                   "FACESERVER_REDIS_COMPACT": "false", "FACESERVER_HISTORY_INDEX": "false"}
            servers["single"] = launch_server(single.url, work / "s-single", **env)
            servers["cluster"] = launch_server("", work / "s-cluster", FACESERVER_REDIS_CLUSTER_URL=cluster.url, **env)
            per_run = args.faces // args.runs
            cpu0 = node_figures(cluster.nodes)
            for k in range(args.runs):
                pair = {}
                for name in ("single", "cluster"):
                    _, grpc_port, _, _ = servers[name]
                    pt = asyncio.run(run_cameras(f"127.0.0.1:{grpc_port}", args.cameras, per_run, 32, 4, bases,
                                                 f"run{k}"))
                    pair[name] = pt["faces_per_s"]
                    log.info("run %d %s: %.0f faces/s (load %.2f)", k, name, pt["faces_per_s"], os.getloadavg()[0])
                pair["ratio"] = round(pair["cluster"] / pair["single"], 3)
                runs.append(pair)
            nodes = node_figures(cluster.nodes)
        finally:
            for proc, *_ in servers.values():
                proc.terminate()
                proc.wait(60)
            cluster.stop()
            single.stop()
    keys = [n["keys"] for n in nodes]
    ratios = [r["ratio"] for r in runs]
    figures = {"cluster": {"ingest_ratio": statistics.median(ratios),
                           "key_spread": round((max(keys) - min(keys)) / (sum(keys) / len(keys)), 4)}}
    context = {"cluster": {
        "command": "python -m bench.history " + " ".join(sys.argv[1:]),
        "what": "faces/s through a real server and simulated gRPC cameras (bench/ingest.py's, 32 a batch, 4 in "
                "flight) into a 3-master Redis Cluster and into one redis-server on the same machine, alternating; "
                "ingest_ratio = median of cluster/single over the runs; key_spread = (max - min) / mean of the "
                "nodes' key counts once every run's faces are in the cluster",
        "runs": runs, "ratio_spread": [min(ratios), max(ratios)], "faces_in_cluster": args.faces - args.faces % args.runs,
        "nodes": nodes, "node_cpu_s_during_runs": [round(n["cpu_s"] - c["cpu_s"], 2) for n, c in zip(nodes, cpu0)],
        "cameras": args.cameras, "load_avg_1min": {"start": round(load0, 2), "end": round(os.getloadavg()[0], 2)},
        "commit": provenance.commit(PROVENANCE_PATHS), "machine": provenance.machine()}}
    merge_results(args.out, figures, context)
    return 0


# -- which index ---------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    import faiss

    from eval import provenance
    from facecodec import base_layer

    faiss.omp_set_num_threads(1)
    n = args.faces
    plan = Plan(n, int(time.time() * 1000), seed=3)
    feats = np.concatenate([f for _, _, f in plan.chunks()])
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(args.workers) as pool:
        coded = [b for part in pool.map(_encode, np.array_split(feats, 64)) for b in part]
    x = np.stack([d.feature for d in base_layer.decode_many(coded)]).astype(np.float32)
    rng = np.random.default_rng(5)
    who = plan.who[rng.choice(n, args.queries, replace=False)]
    q = np.stack([base_layer.decode(b).feature for b in _encode(noisy(people(plan.n_people, plan.seed + 1)[who],
                                                                        rng))]).astype(np.float32)
    _, truth = faiss.knn(q, x, 10)
    sample = (model().mean + (np.random.default_rng(0).normal(size=(65_536, 128)) * model().sigma)
              @ model().basis).astype(np.float32)
    candidates = {
        "IVF1024,PQ16 (the server's)": (lambda: faiss.IndexIVFPQ(faiss.IndexFlatL2(128), 128, 1024, 16, 8), 64),
        "IVF1024,PQ32": (lambda: faiss.IndexIVFPQ(faiss.IndexFlatL2(128), 128, 1024, 32, 8), 64),
        "IVF4096,PQ16": (lambda: faiss.IndexIVFPQ(faiss.IndexFlatL2(128), 128, 4096, 16, 8), 64),
        "IVF1024,SQ4": (lambda: faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(128), 128, 1024,
                                                              faiss.ScalarQuantizer.QT_4bit), 64),
        "IVF1024,SQ8": (lambda: faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(128), 128, 1024,
                                                              faiss.ScalarQuantizer.QT_8bit), 64),
        "HNSW32,Flat": (lambda: faiss.IndexHNSWFlat(128, 32), 128),
        "HNSW32,PQ16": (lambda: faiss.IndexHNSWPQ(128, 16, 32), 128),
    }
    rows = []
    for name, (make, probe) in candidates.items():
        index = make()
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(sample)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.add(x)
        add_s = time.perf_counter() - t0
        size = faiss.serialize_index(index).nbytes
        if hasattr(index, "nprobe"):
            index.nprobe = probe
        else:
            index.hnsw.efSearch = probe
        lat, rec = [], []
        for i in range(len(q)):
            t = time.perf_counter()
            _, found = index.search(q[i:i + 1], 256)
            cand = found[0][found[0] >= 0]
            order = np.argsort(np.linalg.norm(x[cand] - q[i], axis=1))[:10]  # exact re-ranking
            lat.append((time.perf_counter() - t) * 1000)
            rec.append(len(set(cand[order].tolist()) & set(truth[i].tolist())) / 10)
        rows.append({"index": name, "probes_or_ef": probe, "bytes_per_face": round(size / n, 1),
                     "train_s": round(train_s, 1), "add_us_per_face": round(add_s / n * 1e6, 2),
                     "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                     "recall_at_10": round(float(np.mean(rec)), 4)})
        log.info("%s", rows[-1])
        del index
    merge_results(args.out, {}, {"compare": {
        "command": "python -m bench.history " + " ".join(sys.argv[1:]),
        "what": f"{n:,} faces of the bench's people, one query at a time, 256 candidates re-ranked exactly on "
                "decoded features; bytes per face from the serialized index (codes and ids)",
        "rows": rows, "load_avg_1min": round(os.getloadavg()[0], 2),
        "commit": provenance.commit(PROVENANCE_PATHS), "machine": provenance.machine()}})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS / "history.json")
    p.add_argument("--work", type=Path, default=None, help="folder for the temporary Redis and index files")
    p.add_argument("--workers", type=int, default=2, help="processes coding base layers")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="fill, index, restart, search and list at each size")
    r.add_argument("--sizes", default="1e6,1e7")
    r.add_argument("--queries", type=int, default=200)
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("cluster", help="ingest into a 3-master cluster against one Redis; keys per node")
    c.add_argument("--faces", type=int, default=1_000_000, help="faces into each of the two, over every run")
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--cameras", type=int, default=16)
    c.set_defaults(func=cmd_cluster)
    m = sub.add_parser("compare", help="IVF-PQ, IVF-SQ and HNSW on the same faces")
    m.add_argument("--faces", type=int, default=1_000_000)
    m.add_argument("--queries", type=int, default=200)
    m.set_defaults(func=cmd_compare)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
