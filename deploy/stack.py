"""``docker compose up`` for real: a Docker engine, the base images, both images built, the stack run.

Used by the compose smoke test (``tests/deploy/test_compose_stack.py``) and by ``python -m bench.deploy``
(``bench/results/deploy.json``); both run the same steps:

1. :class:`DockerHost`: the Docker engine that ``DOCKER_HOST`` (or the default socket) names when one
   answers; otherwise a ``dockerd`` started here, in a folder of its own, on a socket of its own, with
   no default bridge (``--bridge none``; builds use the host's network, ``docker build --network
   host``). It writes the firewall rules its networks need (a host whose FORWARD policy is DROP would
   otherwise keep the containers of a network from reaching each other); the firewall as it was is
   saved before it starts and restored after it stops (``iptables-save``/``iptables-restore``). Stopping
   it by its PID and deleting its folder removes everything else it made; the stack's own networks are
   compose's user-defined bridges, which ``down`` removes.
2. :func:`ensure_base_images`: ``python:3.11-slim-bookworm`` and ``redis:7.4-bookworm`` are pulled;
   where Docker Hub cannot be reached they are stood in for by images built here from Debian's
   packages (``mmdebstrap --variant=minbase bookworm``, then ``docker import`` under the same tag):
   Debian's Python 3.11 with pip, and Debian's ``redis-server`` (7.0). The machine's extra CA
   certificates (``/usr/local/share/ca-certificates``) are copied into the Python stand-in, so that
   pip's TLS works where a proxy re-signs it.
3. :func:`build_images`: ``deploy/Dockerfile``'s two targets, with the package index as a build
   argument (the one this environment's pip uses).
4. :class:`Stack`: ``docker-compose`` (1.29, or ``docker compose``) on ``docker-compose.yml`` under a
   project name of its own, random secrets (``deploy/make_secrets.py``) and free loopback ports.

Nothing here asserts: callers decide what a failure is. Every command's output goes to the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_IMAGE = "facecodec/analysis-server:0.1.0"
EDGE_IMAGE = "facecodec/edge-agent:0.1.0"
IMAGES = {"server": SERVER_IMAGE, "edge": EDGE_IMAGE}  # Dockerfile target -> tag (as docker-compose.yml names them)
PYTHON_BASE = "python:3.11-slim-bookworm"
REDIS_BASE = "redis:7.4-bookworm"
PYPI_INDEX = "https://pypi.org/simple"
CA_DIR = Path("/usr/local/share/ca-certificates")
# Free disk a dockerd started here needs under its root: the whole smoke run from a cold cache took
# 2.2 GB at its peak (stand-in base images, both images, the stack's volumes; measured 2026-11-29);
# twice that leaves room for the build's intermediate layers. Below it, the run stops with a
# DockerError saying so instead of failing midway (a full disk once broke mmdebstrap's tarball).
NEEDS_FREE_GB = 4.5

log = logging.getLogger("deploy.stack")


class DockerError(RuntimeError):
    """A docker, dockerd, mmdebstrap or compose command failed; the message has its output's tail."""


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
         input: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``cmd``'s completed process; :class:`DockerError` when ``check`` and it failed or ran past ``timeout``.

    Each command runs in a session (and process group) of its own: mmdebstrap tears down a failed
    run by sending SIGHUP to its whole process group, which would otherwise be the caller's (pytest's,
    and ``make``'s above it) and end the test run with a bare "Hangup" instead of this error.
    """
    log.debug("$ %s", " ".join(cmd))
    try:
        r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=timeout, input=input,
                           start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise DockerError(f"{' '.join(cmd[:4])}... did not finish in {timeout:.0f} s") from e
    if r.stdout:
        log.debug("%s", r.stdout.decode(errors="replace")[-4000:])
    if check and r.returncode != 0:
        tail = (r.stdout + r.stderr).decode(errors="replace")[-3000:]
        raise DockerError(f"{' '.join(cmd[:6])} exited {r.returncode}:\n{tail}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 1.0):
    """``cond()``'s first true value, polled every ``interval`` s; :class:`TimeoutError` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# -- the engine ----------------------------------------------------------------------------------
class DockerHost:
    """A Docker engine to build and run on; see the module docstring. Use as a context manager.

    ``root``: the folder of a daemon started here (default: a new temporary folder, deleted on exit;
    a given folder is kept, with its image cache, for the next run).
    """

    def __init__(self, root: Path | None = None):
        self.keep_root = root is not None
        self.root = root
        self.proc: subprocess.Popen | None = None
        self._firewall: dict[str, bytes] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        self.env["DOCKER_BUILDKIT"] = "0"  # the classic builder: BuildKit fetches its frontends from Docker Hub
        if "DOCKER_HOST" in os.environ:
            self.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        self.docker_bin = shutil.which("docker")
        if self.docker_bin is None:
            raise DockerError("no `docker` client: install Debian's docker.io (`make test` does)")

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def docker(self, *args: str, timeout: float = 600, check: bool = True, input: bytes | None = None):
        return _run([self.docker_bin, *args], env=self.env, timeout=timeout, check=check, input=input)

    def answers(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}", timeout=30, check=False).returncode == 0

    def __enter__(self) -> DockerHost:
        if self.answers():
            log.info("using the Docker engine that answers (%s)", self.env.get("DOCKER_HOST", "default socket"))
            return self
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerError("no Docker engine answers and there is no `dockerd` to start one: install Debian's "
                              "docker.io (`make test` does), or set DOCKER_HOST")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="fc-docker-", dir="/var/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        free_gb = shutil.disk_usage(self.root).free / 1e9
        if free_gb < NEEDS_FREE_GB:
            if not self.keep_root:
                shutil.rmtree(self.root, ignore_errors=True)
            raise DockerError(f"a Docker engine started here needs about {NEEDS_FREE_GB:.1f} GB free for the "
                              f"base images, the two images and the stack; {self.root.parent} has "
                              f"{free_gb:.1f} GB. Free some, or set DOCKER_HOST to an engine elsewhere")
        sock = self.root / "docker.sock"
        self.env["DOCKER_HOST"] = f"unix://{sock}"
        self._log = open(self.root / "dockerd.log", "ab")
        self._firewall = _save_firewall()
        self.proc = subprocess.Popen(
            [dockerd, "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "dockerd.pid"), "--host", f"unix://{sock}", "--storage-driver", "overlay2",
             "--bridge", "none"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or self.answers(), 60, "dockerd to answer", 0.5)
            if self.proc.poll() is not None:
                raise DockerError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("started dockerd (pid %d) in %s", self.proc.pid, self.root)
        return self

    def log_tail(self, n: int = 3000) -> str:
        path = self.root / "dockerd.log" if self.root else None
        return path.read_text(errors="replace")[-n:] if path and path.exists() else ""

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # dockerd stops its containers, then exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        _restore_firewall(self._firewall)
        if not self.keep_root:
            # Overlay mounts left by a killed daemon would make rmtree fail: unmount what is under the root.
            for line in reversed(Path("/proc/mounts").read_text().splitlines()):
                target = line.split()[1]
                if target.startswith(str(self.root)):
                    subprocess.run(["umount", "-l", target], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)
        self.proc = None

    def image_exists(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, timeout=60, check=False).returncode == 0

    def image_mb(self, tag: str) -> float:
        size = int(self.docker("image", "inspect", "--format", "{{.Size}}", tag, timeout=60).stdout)
        return round(size / 1e6, 1)


def _save_firewall() -> dict[str, bytes]:
    """The host's iptables rules (IPv4 and IPv6) as ``iptables-save`` prints them, to restore later."""
    saved = {}
    for tool in ("iptables", "ip6tables"):
        if shutil.which(f"{tool}-save"):
            r = subprocess.run([f"{tool}-save"], capture_output=True, timeout=60)
            if r.returncode == 0:
                saved[tool] = r.stdout
    return saved


def _restore_firewall(saved: dict[str, bytes]) -> None:
    """Put back the rules :func:`_save_firewall` saved (dockerd leaves its chains and a DROP policy)."""
    for tool, rules in saved.items():
        r = subprocess.run([f"{tool}-restore"], input=rules, capture_output=True, timeout=60)
        if r.returncode != 0:
            log.warning("could not restore the %s rules: %s", tool, r.stderr.decode(errors="replace")[-300:])


# -- base images ---------------------------------------------------------------------------------
@dataclass
class BaseImage:
    tag: str
    packages: list[str]
    hooks: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _python_base() -> BaseImage:
    hooks = ['rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED']
    if any(CA_DIR.glob("*.crt")):
        hooks.append(f'mkdir -p "$1"{CA_DIR} && cp {CA_DIR}/*.crt "$1"{CA_DIR}/ && chroot "$1" update-ca-certificates')
    hooks.append('rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*')
    return BaseImage(PYTHON_BASE, ["python3", "python3-pip", "python-is-python3", "ca-certificates", "libgomp1"],
                     hooks, ['CMD ["python3"]', "ENV LANG=C.UTF-8"])


def _redis_base() -> BaseImage:
    hooks = ['mkdir -p "$1"/data && chroot "$1" chown redis:redis /data',
             'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*']
    return BaseImage(REDIS_BASE, ["redis-server", "redis-tools"], hooks,
                     ["WORKDIR /data", 'CMD ["redis-server"]', "EXPOSE 6379"])


def ensure_base_images(host: DockerHost) -> dict[str, str]:
    """Each base image present, pulled or stood in for: tag -> ``present`` | ``pulled`` | ``stand-in``."""
    out = {}
    for base in (_python_base(), _redis_base()):
        if host.image_exists(base.tag):
            out[base.tag] = "present"
        elif host.docker("pull", base.tag, timeout=900, check=False).returncode == 0:
            out[base.tag] = "pulled"
        else:
            log.info("%s cannot be pulled: building a stand-in from Debian's packages", base.tag)
            build_stand_in(host, base)
            out[base.tag] = "stand-in"
    return out


def build_stand_in(host: DockerHost, base: BaseImage) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise DockerError(f"{base.tag} cannot be pulled and there is no `mmdebstrap` to build a stand-in: "
                          "install Debian's mmdebstrap (`make test` does)")
    with tempfile.TemporaryDirectory(prefix="fc-rootfs-", dir="/var/tmp") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        cmd = [mmdebstrap, "--variant=minbase", "--include=" + ",".join(base.packages)]
        cmd += [f"--customize-hook={h}" for h in base.hooks]
        _run([*cmd, "bookworm", str(tar)], timeout=900)
        changes = [a for c in base.changes for a in ("--change", c)]
        host.docker("import", *changes, str(tar), base.tag, timeout=600)


# -- our images ----------------------------------------------------------------------------------
def build_args() -> dict[str, str]:
    """The Dockerfile's package index: ``PIP_INDEX_URL`` of this environment, else PyPI."""
    return {"PIP_INDEX_URL": os.environ.get("PIP_INDEX_URL", PYPI_INDEX)}


@dataclass
class Build:
    seconds: dict[str, float]  # Dockerfile target -> build time
    context_mb: float  # the build context as the classic builder reports sending it


def build_images(host: DockerHost, args: dict[str, str] | None = None) -> Build:
    """Build both targets of deploy/Dockerfile, tagged as docker-compose.yml names them."""
    args = build_args() if args is None else args
    flags = [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
    times, context = {}, 0.0
    for target, tag in IMAGES.items():
        t = time.monotonic()
        r = host.docker("build", "--network", "host", "-f", "deploy/Dockerfile", "--target", target, "-t", tag,
                        *flags, ".", timeout=1800)
        times[target] = round(time.monotonic() - t, 1)
        m = re.search(r"Sending build context to Docker daemon\s+([\d.]+)\s*([kMG]?B)", r.stdout.decode(errors="replace"))
        if m:
            context = float(m.group(1)) * {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[m.group(2)]
        log.info("built %s in %.0f s (%.0f MB)", tag, times[target], host.image_mb(tag))
    return Build(times, round(context, 2))


# -- the stack -----------------------------------------------------------------------------------
def compose_command() -> list[str]:
    path = shutil.which("docker-compose")
    if path:
        return [path]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    raise DockerError("neither docker-compose nor `docker compose` is installed (`make test` installs docker-compose)")


def secrets_env() -> dict[str, str]:
    """Random secrets, as ``python deploy/make_secrets.py`` writes them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_secrets", ROOT / "deploy" / "make_secrets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(line.split("=", 1) for line in module.env_file().splitlines() if line and not line.startswith("#"))


class Stack:
    """docker-compose.yml under its own project name, with random secrets and free loopback ports."""

    def __init__(self, host: DockerHost, files: tuple[str, ...] = ("docker-compose.yml",), project: str | None = None):
        self.host = host
        self.files = files
        self.project = project or f"fcsmoke{os.getpid()}"
        self.secrets = secrets_env()
        self.http_port, self.grpc_port = free_port(), free_port()
        self.env = {**host.env, **self.secrets, "COMPOSE_PROJECT_NAME": self.project,
                    "HTTP_PUBLISH": f"127.0.0.1:{self.http_port}",
                    "GRPC_PUBLISH": f"127.0.0.1:{self.grpc_port}"}
        self.api_key = self.secrets["FACESERVER_API_KEYS"].split(",")[0]

    def compose(self, *args: str, timeout: float = 600, check: bool = True, files: tuple[str, ...] | None = None):
        fs = [a for f in (files or self.files) for a in ("-f", f)]
        return _run([*compose_command(), *fs, *args], env=self.env, timeout=timeout, check=check)

    def up(self, *services: str, files: tuple[str, ...] | None = None) -> None:
        self.compose("up", "-d", "--no-build", *services, files=files)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False, timeout=300)

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service, check=False).stdout.decode().split()
        return out

    def health(self, service: str) -> str:
        """``healthy``, ``unhealthy``, ``starting``, ``running`` (no health check) or ``missing``."""
        ids = self.containers(service)
        if not ids:
            return "missing"
        r = self.host.docker("inspect", "--format", "{{json .State}}", ids[0], check=False, timeout=60)
        if r.returncode != 0:
            return "missing"
        state = json.loads(r.stdout)
        if state.get("Health"):
            return state["Health"]["Status"]
        return "running" if state.get("Running") else state.get("Status", "missing")

    def wait_healthy(self, services: list[str], timeout: float) -> None:
        def all_healthy() -> bool:
            states = {s: self.health(s) for s in services}
            bad = [s for s, st in states.items() if st in ("unhealthy", "exited", "dead")]
            if bad:
                raise DockerError(f"service(s) {bad} are {[states[s] for s in bad]}:\n{self.logs(*bad)}")
            return all(st in ("healthy", "running") for st in states.values())

        wait_for(all_healthy, timeout, f"services {services} healthy")

    def logs(self, *services: str, tail: int = 60) -> str:
        r = self.compose("logs", "--no-color", "--tail", str(tail), *services, check=False, timeout=120)
        return (r.stdout + r.stderr).decode(errors="replace")

    def restart(self, service: str) -> None:
        self.compose("restart", "--timeout", "30", service, timeout=300)

    # -- REST ------------------------------------------------------------------------------------
    def get(self, path: str, port: int | None = None, timeout: float = 60) -> tuple[int, bytes, Message | dict]:
        """(status, body, headers) of an authenticated GET (headers looked up case-insensitively);
        status 0 when nothing answered."""
        req = urllib.request.Request(f"http://127.0.0.1:{port or self.http_port}{path}",
                                     headers={"X-API-Key": self.api_key})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers
        except (urllib.error.URLError, OSError):
            return 0, b"", {}

    def faces(self, port: int | None = None) -> list[dict]:
        status, body, _ = self.get("/faces?limit=500", port)
        return json.loads(body)["items"] if status == 200 else []
