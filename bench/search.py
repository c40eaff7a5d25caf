"""``python -m bench.search``: 1:N search latency and recall of the server's gallery index, 1e3 to 1e6 identities.

The gallery is synthetic, since no data set here has a million people: identities are features
drawn from the base-layer model's own distribution (its mean, PCA basis and per-component
scales, learned on LFW train people). A probe is a gallery identity plus isotropic noise scaled
to a same-person distance (``--noise``, default 0.5: a hard same-person probe, near dlib's 0.6
threshold; easier probes give higher recall), then coded and decoded by the base layer, as an
observation is. Each probe is one query (k=1)
through :class:`analysis_server.gallery_index.GalleryIndex`, the object the server searches,
built with the server's default settings (exact numpy scan up to 50,000 rows, FAISS IVF beyond).

``recall_at_1`` is measured against exact search: the fraction of probes whose nearest
identity is the exact scan's nearest. ``true_identity_at_1`` is the fraction whose nearest is
the identity the probe was made from. Above the exact limit the exact scan is timed too, as a
reference point. Like the server (``blas_threads`` = 1), numpy and FAISS run one thread.
Targets: p50 under 5 ms at 1e6 identities with recall@1 of 0.99 or more.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The code these figures depend on; edits elsewhere do not make them "-dirty".
PROVENANCE_PATHS = ("analysis_server", "bench", "facewire", "facecodec/base_layer.py")

log = logging.getLogger("bench.search")


def synthetic_gallery(n: int, seed: int = 0):
    import numpy as np

    from facecodec import base_layer

    model = base_layer.load_model(base_layer.default_model_name("dlib-resnet-128"))
    return model.sample(n, np.random.default_rng(seed))


def probes(gallery, n: int, noise: float, seed: int = 1):
    """(decoded probe features, index of the identity each came from)."""
    import numpy as np

    from facecodec import base_layer

    rng = np.random.default_rng(seed)
    who = rng.choice(len(gallery), n, replace=False)
    eps = rng.normal(size=(n, gallery.shape[1]))
    eps *= noise / np.linalg.norm(eps, axis=1, keepdims=True)
    raw = gallery[who] + eps.astype(np.float32)
    decoded = np.stack([base_layer.decode(base_layer.encode(f)).feature for f in raw])
    return decoded.astype(np.float32), who


def time_queries(index, queries, exact: bool) -> tuple[list[str], np.ndarray]:  # noqa: F821
    import numpy as np

    keys, times = [], []
    for q in queries:
        t = time.perf_counter()
        hit = index.search(q, 1, exact=exact)[0][0]
        times.append(time.perf_counter() - t)
        keys.append(hit.key)
    return keys, np.asarray(times) * 1000


def run(sizes: list[int], n_queries: int, n_exact_large: int, noise: float) -> list[dict]:
    import faiss
    import numpy as np

    from analysis_server.gallery_index import EXACT, GalleryIndex
    from analysis_server.settings import ServerSettings

    faiss.omp_set_num_threads(1)
    defaults = ServerSettings()
    full = synthetic_gallery(max(sizes))
    points = []
    for n in sizes:
        g = full[:n]
        index = GalleryIndex(g.shape[1], defaults.exact_search_max, defaults.faiss_nlist, defaults.faiss_nprobe)
        t = time.perf_counter()
        index.add([f"{i}/0" for i in range(n)], g)
        build_s = time.perf_counter() - t
        q, who = probes(g, min(n_queries, n), noise)
        truth = [f"{i}/0" for i in who]
        n_exact = len(q) if index.kind == EXACT else min(n_exact_large, len(q))
        exact_keys, exact_ms = time_queries(index, q[:n_exact], exact=True)
        if index.kind != EXACT:
            # recall needs the exact answer of every probe: the batched scan gives it faster
            rest = [h[0].key for h in index.search(q[n_exact:], 1, exact=True)] if n_exact < len(q) else []
            exact_all = exact_keys + rest
            keys, ms = time_queries(index, q, exact=False)
            recall = float(np.mean([a == b for a, b in zip(keys, exact_all)]))
            points.append({"gallery": n, "index": index.kind, "p50_ms": round(float(np.percentile(ms, 50)), 3),
                           "p99_ms": round(float(np.percentile(ms, 99)), 3), "recall_at_1": round(recall, 4),
                           "true_identity_at_1": round(float(np.mean([a == b for a, b in zip(keys, truth)])), 4),
                           "queries": len(q), "build_s": round(build_s, 2),
                           "nlist": int(index._faiss.nlist), "nprobe": int(index._faiss.nprobe)})
            log.info("%8d %s: p50 %.3f ms p99 %.3f ms recall@1 %.4f (build %.1f s)", n, index.kind,
                     points[-1]["p50_ms"], points[-1]["p99_ms"], recall, build_s)
        points.append({"gallery": n, "index": EXACT, "p50_ms": round(float(np.percentile(exact_ms, 50)), 3),
                       "p99_ms": round(float(np.percentile(exact_ms, 99)), 3), "recall_at_1": 1.0,
                       "true_identity_at_1": round(float(np.mean([a == b for a, b in zip(exact_keys, truth)])), 4),
                       "queries": n_exact, "build_s": round(build_s, 2) if index.kind == EXACT else None,
                       "server_default": index.kind == EXACT})
        log.info("%8d %s: p50 %.3f ms p99 %.3f ms", n, EXACT, points[-1]["p50_ms"], points[-1]["p99_ms"])
        del index
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--queries", type=int, default=1000, help="probes per gallery size")
    p.add_argument("--exact-queries-large", type=int, default=100,
                   help="probes timed one by one with the exact scan above the exact limit")
    p.add_argument("--noise", type=float, default=0.5, help="probe distance from its identity before coding")
    p.add_argument("--out", type=Path, default=RESULTS / "search.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    from eval import provenance

    points = run([int(s) for s in args.sizes.split(",")], args.queries, args.exact_queries_large, args.noise)
    result = {
        "what": "1:N search (k=1, one query at a time) in analysis_server.gallery_index.GalleryIndex with the "
                "server's default settings; synthetic identities from the base-layer model's distribution, "
                f"probes at distance {args.noise} from their identity, then base-layer coded",
        "points": points,
        "threads": 1,
        "commit": provenance.commit(PROVENANCE_PATHS),
        "machine": provenance.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("-> %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
