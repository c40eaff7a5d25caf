"""``python -m demo`` (what ``make demo`` runs), as a person would use it: it prints the dashboard's
address and an API key that signs in, faces arrive from the simulated cameras (the watchlist
identity it enrols is recognised), and Ctrl-C (SIGINT) stops every process it started, exit 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from testkit.processes import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False



def test_demo_prints_the_dashboard_and_key_shows_faces_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESERVER_", "EDGE_", "REDIS_URL"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    data = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "demo", "--http-port", "0", "--data-dir", str(data)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    text = lambda: "".join(lines)
    try:
        wait_until(lambda: "API key" in text() or proc.poll() is not None, 300, "the demo's banner")
        assert proc.poll() is None, text()
        url = re.search(r"dashboard\s+(http://\S+/ui)", text()).group(1)
        key = re.search(r"API key\s+(\S+)", text()).group(1)
        pids = [int(p) for p in re.search(r"analysis server pid (\d+), edge agent pid (\d+)", text()).groups()]
        redis_pid = int((data / "server" / "redis.pid").read_text())

        with httpx.Client(base_url=url.removesuffix("/ui"), timeout=30) as browser:
            r = browser.post("/ui/login", data={"api_key": key, "next": "/ui"})
            assert r.status_code == 303 and "fs_session" in r.cookies
            assert browser.get("/ui").status_code == 200

            def watchlist_hit() -> bool:
                return any(e["type"] == "watchlist_hit" for e in browser.get("/events", params={"count": 1000}).json())

            wait_until(watchlist_hit, 180, "a watchlist hit of the enrolled person on a simulated camera")
            cameras = {c["camera_id"]: c for c in browser.get("/cameras").json()}
            assert set(cameras) == {"entrance", "lobby"} and all(c["online"] for c in cameras.values())

        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, text()
        reader.join(10)
        assert "analysis server stopped (exit code 0)" in text() and "edge agent stopped (exit code 0)" in text(), text()
        for pid in (*pids, redis_pid):
            wait_until(lambda pid=pid: not _alive(pid), 10, f"process {pid} to end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
