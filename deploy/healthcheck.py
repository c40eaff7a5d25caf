"""Container health checks (``HEALTHCHECK`` in the Dockerfiles): ``python healthcheck.py server|edge|camera``.

server: ``GET /readyz`` answers 200 (Redis answers, models loaded, gRPC serving).
edge:   the agent's status file was written within three status intervals and at least one
        camera stream is connected.
camera: the simulated cameras answer ``/healthz``.
Exit 0 when healthy, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request


def _get(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=4) as r:
        return r.status == 200


def server() -> str | None:
    port = os.environ.get("FACESERVER_HTTP_PORT", "8080")
    return None if _get(f"http://127.0.0.1:{port}/readyz") else "not ready"


def edge() -> str | None:
    path = os.environ.get("EDGE_STATUS_FILE", "/data/status.json")
    interval = float(os.environ.get("EDGE_STATUS_INTERVAL_S", "10"))
    age = time.time() - os.stat(path).st_mtime
    if age > 3 * interval + 5:
        return f"status file {path} is {age:.0f} s old"
    connected = str(json.loads(open(path).read()).get("connected", "0/0"))
    if connected.startswith("0/"):
        return f"no camera stream connected ({connected})"
    return None


def camera() -> str | None:
    port = os.environ.get("CAMERA_PORT", "8554")
    return None if _get(f"http://127.0.0.1:{port}/healthz") else "no answer"


if __name__ == "__main__":
    try:
        problem = {"server": server, "edge": edge, "camera": camera}[sys.argv[1]]()
    except Exception as e:  # any failure to check is unhealthy
        problem = repr(e)
    if problem:
        sys.stderr.write(problem + "\n")
    sys.exit(1 if problem else 0)
