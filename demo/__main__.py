"""``python -m demo``: the analysis server, its embedded Redis and one edge agent, on this machine.

1. Makes two sample clips from the committed LFW test faces and serves them, looped in real
   time, as two MJPEG cameras (``entrance`` and ``lobby``; one person walks past both), from a
   thread of this process (:mod:`demo.camera`).
2. Starts ``python -m analysis_server`` (embedded Redis under ``DATA_DIR/server``; testkit's
   launcher, :class:`testkit.processes.ServerProcess`) with a random API key and camera token made
   for this run.
3. Enrols two of the people from photos the clips do not use (one on the watchlist), unless
   ``--no-enroll``.
4. Starts ``python -m edge_agent`` on both cameras.
5. Prints the dashboard's address and the API key, then waits. Ctrl-C (or SIGTERM) stops the
   agent, then the server (which saves and stops Redis), and exits 0.

The children run in their own process groups, so Ctrl-C reaches only this process and the
shutdown goes in order; each child also gets SIGTERM if this process dies. Their logs are
``DATA_DIR/server.log`` and ``DATA_DIR/edge.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from demo.camera import CameraServer, make_clips
from demo.clip import FACES, people
from testkit.processes import ServerProcess

log = logging.getLogger("demo")

ENROL = [("Sophia_Loren", True), ("Kurt_Warner", False)]  # (person, on the watchlist)


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def _die_with_parent() -> None:  # in the child, between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Demo:
    """The two child processes and the order they start and stop in."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.data = args.data_dir.resolve()
        self.api_key = args.api_key or secrets.token_urlsafe(18)
        self.camera_tokens: dict[str, str] = {}  # one per camera (no wildcard token)
        self.stop_requested = threading.Event()
        self.server: ServerProcess | None = None
        self.agent: subprocess.Popen | None = None
        self.cameras: CameraServer | None = None
        self.http_port = 0
        self.grpc_port = 0

    # -- children ----------------------------------------------------------------------------
    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESERVER_", "EDGE_", "REDIS_URL"))}
        env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
        return env

    def _spawn(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        out = open(self.data / log_name, "w")
        try:
            return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            out.close()

    def start_server(self) -> None:
        host = self.args.host
        http = self.args.http_port
        if http and not port_free(host, http):
            log.warning("port %d is taken; the dashboard gets a free port instead", http)
            http = 0
        self.camera_tokens = {name: secrets.token_urlsafe(18) for name in self.cameras.streams}
        # Its own process group (Ctrl-C reaches only this process), and SIGTERM if this process dies.
        self.server = ServerProcess(self.data, data_dir=self.data / "server", grpc_port=self.args.grpc_port,
                                    http_port=http, args=["--host", host], log_name="server.log",
                                    popen={"start_new_session": True, "preexec_fn": _die_with_parent},
                                    FACESERVER_API_KEYS=self.api_key,
                                    FACESERVER_CAMERA_TOKENS=json.dumps(self.camera_tokens), PYTHONUNBUFFERED="1")
        self.server.start(wait=False)
        log.info("analysis server starting (pid %d), log in %s", self.server.proc.pid, self.server.log_path)
        try:  # up to its ready line (which names the ports), or until a stop is asked for
            self.server.wait_ready(self.args.start_timeout, readyz=False, stop=self.stop_requested)
        except (RuntimeError, TimeoutError) as e:
            raise DemoError(f"{e}\n(log: {self.server.log_path})") from None
        self.grpc_port, self.http_port = self.server.grpc_port, self.server.http_port

    def _tail(self, name: str, chars: int = 2000) -> str:
        try:
            return (self.data / name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start_agent(self, sources: dict[str, str]) -> None:
        args = [sys.executable, "-m", "edge_agent", "--server", f"127.0.0.1:{self.grpc_port}", "--data-dir",
                str(self.data / "edge"), "--status-file", str(self.data / "edge-status.json")]
        cameras = [{"id": camera, "source": source, "token": self.camera_tokens[camera]}
                   for camera, source in sources.items()]
        self.agent = self._spawn(args, self._env(EDGE_CAMERAS=json.dumps(cameras)), "edge.log")
        log.info("edge agent starting (pid %d), log in %s", self.agent.pid, self.data / "edge.log")

    def stop(self) -> None:
        """The cameras, the agent (it sends what it holds), then the server (which stops Redis).

        The cameras go first so that the agent's reader threads are not inside OpenCV's blocking
        read when the agent exits (OpenCV aborts the process then: "exception not rethrown").
        """
        if self.cameras is not None:
            self.cameras.stop()
            if self.agent is not None and self.agent.poll() is None:
                time.sleep(0.5)
        server = self.server.proc if self.server is not None else None
        for name, proc, grace in (("edge agent", self.agent, 20), ("analysis server", server, 30)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %d s; killing it", name, grace)
                proc.kill()
                proc.wait()
            log.info("%s stopped (exit code %d)", name, proc.returncode)

    # -- REST ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method,
                                     headers={"X-API-Key": self.api_key})
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")

    def enrol(self, faces_dir: Path) -> None:
        """Two identities from photos the clips do not show (the clips use each person's first photo)."""
        photos = people(faces_dir)
        existing = {i["name"] for i in self._request("GET", "/identities")["items"]}
        for person, watchlist in ENROL:
            name = person.replace("_", " ")
            if name in existing or person not in photos or self.stop_requested.is_set():
                continue
            ident = self._request("POST", "/identities", json.dumps({"name": name, "watchlist": watchlist}).encode(),
                                  "application/json")
            photo = photos[person][1 % len(photos[person])]
            boundary = secrets.token_hex(8)
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{photo.name}\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            try:
                self._request("POST", f"/identities/{ident['identity_id']}/images", body,
                              f"multipart/form-data; boundary={boundary}")
            except urllib.error.HTTPError as e:
                log.warning("could not enrol %s from %s: %s", name, photo.name, e.read()[:200])
                continue
            log.info("enrolled %s%s", name, " (watchlist)" if watchlist else "")

    # -- the whole run -------------------------------------------------------------------------
    def run(self) -> int:
        if self.data.exists() and not self.args.keep_data:
            shutil.rmtree(self.data)
        self.data.mkdir(parents=True, exist_ok=True)
        faces = self.args.faces
        try:
            self.cameras = CameraServer(make_clips(self.data / "clips", faces)).start()
            log.info("sample cameras: %s", ", ".join(self.cameras.url(n) for n in self.cameras.streams))
            self.start_server()
            if self.stop_requested.is_set():
                return 0
            if self.args.enroll:
                self.enrol(faces)
            if self.stop_requested.is_set():
                return 0
            self.start_agent({name: self.cameras.url(name) for name in self.cameras.streams})
            url = f"http://{'127.0.0.1' if self.args.host in ('0.0.0.0', '::') else self.args.host}:{self.http_port}/ui"
            sys.stdout.write(
                "\n"
                f"  dashboard   {url}\n"
                f"  API key     {self.api_key}\n"
                f"  gRPC        {self.args.host}:{self.grpc_port} (camera tokens: "
                f"{', '.join(f'{c} {t}' for c, t in self.camera_tokens.items())})\n"
                f"  cameras     {', '.join(self.cameras.url(n) for n in self.cameras.streams)}\n"
                f"  processes   analysis server pid {self.server.proc.pid}, edge agent pid {self.agent.pid}\n"
                f"  logs        {self.data / 'server.log'}, {self.data / 'edge.log'}\n"
                "\n  Sign in with the API key. Faces appear as people walk past the cameras. Ctrl-C stops everything.\n\n")
            sys.stdout.flush()
            while not self.stop_requested.wait(0.5):
                for name, proc, log_name in (("analysis server", self.server.proc, "server.log"),
                                             ("edge agent", self.agent, "edge.log")):
                    if proc.poll() is not None:
                        raise DemoError(f"the {name} exited with code {proc.returncode}:\n{self._tail(log_name)}")
            log.info("stopping")
            return 0
        finally:
            self.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address the server binds (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8080, help="dashboard and REST port (0 = any free port)")
    p.add_argument("--grpc-port", type=int, default=0, help="gRPC ingest port (default: any free port)")
    p.add_argument("--data-dir", type=Path, default=Path("var/demo"), help="where everything is kept (default var/demo)")
    p.add_argument("--keep-data", action="store_true", help="keep the faces of the previous run (default: start afresh)")
    p.add_argument("--faces", type=Path, default=FACES, help="folder of <person>/*.jpg sample photos")
    p.add_argument("--api-key", help="the REST API key to use (default: a random one, printed)")
    p.add_argument("--no-enroll", dest="enroll", action="store_false", help="do not enrol anyone at start")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the server")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.api_key is not None and len(args.api_key) < 8:
        parser().error("--api-key needs at least 8 characters")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s", datefmt="%H:%M:%S")
    demo = Demo(args)

    def request_stop(signum, frame) -> None:
        demo.stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        return demo.run()
    except DemoError as e:
        log.error("%s", e)
        return 1
    except (urllib.error.URLError, OSError) as e:
        log.error("the demo failed: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
