"""The deployment recipes as files: what ``docker-compose config`` resolves docker-compose.yml to (safe
defaults: loopback ports, Redis with a password on an internal network, a storage key, per-camera
tokens, hardened containers), what deploy/Dockerfile says, and the containers' health-check script
against real files and a real HTTP server. Building and running the stack is
``test_compose_stack.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"FACESERVER_API_KEYS": "compose-key-0001", "ENTRANCE_TOKEN": "entrance-token-01",
           "LOBBY_TOKEN": "lobby-token-0001", "REDIS_PASSWORD": "redis-password-01",
           "FACESERVER_STORAGE_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
           "EDGE_STORAGE_KEY": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="}
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: `make test` installs Debian's docker-compose "
                    "(or run `apt-get install docker-compose`)", pytrace=False)
    return path


def compose_config(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    return subprocess.run([docker_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def as_json(yaml_text: str) -> dict:
    """Parse YAML with the Python that runs docker-compose (it needs PyYAML; this venv has none)."""
    first = Path(docker_compose()).read_text(errors="replace").splitlines()[0]
    python = first[2:].strip().split()[0] if first.startswith("#!") and "python" in first else "python3"
    out = subprocess.run([python, "-c", "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
                         input=yaml_text, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    r = compose_config(SECRETS)
    assert r.returncode == 0, r.stderr
    return as_json(r.stdout)


def test_compose_file_is_valid_and_has_the_four_services(config):
    assert set(config["services"]) == {"redis", "analysis", "camera", "edge"}
    assert set(config["volumes"]) == {"redis-data", "server-data", "edge-data"}


def test_redis_persists_needs_a_password_and_is_reachable_from_the_server_only(config):
    redis = config["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd and "--requirepass" in cmd
    assert redis["environment"]["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]
    assert any(v.startswith("redis-data:/data") for v in _volumes(redis))
    assert "redis-cli" in redis["healthcheck"]["test"]
    assert set(redis["networks"]) == {"backend"} and config["networks"]["backend"]["internal"] is True
    assert "ports" not in redis
    assert config["services"]["analysis"]["environment"]["REDIS_URL"] == \
        f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"


def test_services_start_in_order_of_health(config):
    s = config["services"]
    assert s["analysis"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert s["edge"]["depends_on"] == {"analysis": {"condition": "service_healthy"},
                                       "camera": {"condition": "service_healthy"}}
    assert s["edge"]["environment"]["EDGE_SERVER"] == "analysis:50051"
    assert any(v.startswith("server-data:/data") for v in _volumes(s["analysis"]))
    assert any(v.startswith("edge-data:/data") for v in _volumes(s["edge"]))


def test_each_camera_has_its_own_token_and_no_wildcard(config):
    s = config["services"]
    tokens = json.loads(s["analysis"]["environment"]["FACESERVER_CAMERA_TOKENS"])
    assert tokens == {"entrance": SECRETS["ENTRANCE_TOKEN"], "lobby": SECRETS["LOBBY_TOKEN"]}
    cameras = json.loads(s["edge"]["environment"]["EDGE_CAMERAS"])
    assert {c["id"]: c["token"] for c in cameras} == tokens
    assert [c["source"] for c in cameras] == ["http://camera:8554/entrance.mjpg", "http://camera:8554/lobby.mjpg"]
    assert "EDGE_TOKEN" not in s["edge"]["environment"]


def test_faces_are_encrypted_at_rest_on_both_sides_each_with_its_own_key(config):
    assert config["services"]["analysis"]["environment"]["FACESERVER_STORAGE_KEY"] == SECRETS["FACESERVER_STORAGE_KEY"]
    assert config["services"]["edge"]["environment"]["EDGE_STORAGE_KEY"] == SECRETS["EDGE_STORAGE_KEY"]


def test_redis_writes_its_files_private(config):
    assert "umask 077" in " ".join(config["services"]["redis"]["command"])


def test_ports_are_published_on_loopback_unless_told_otherwise(config):
    def parse(p) -> tuple[str, int, int]:  # compose 1.29 writes "ip:published:target/tcp", v2 a mapping
        if isinstance(p, str):
            ip, published, target = p.split("/")[0].split(":")
            return ip, int(published), int(target)
        return p.get("host_ip"), int(p["published"]), int(p["target"])

    ports = {parse(p) for p in config["services"]["analysis"]["ports"]}
    assert ports == {("127.0.0.1", 8080, 8080), ("127.0.0.1", 50051, 50051)}
    assert all("ports" not in svc for name, svc in config["services"].items() if name != "analysis")


@pytest.mark.parametrize("service", ["redis", "analysis", "camera", "edge"])
def test_containers_are_hardened(config, service):
    svc = config["services"][service]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["pids_limit"] > 0


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_each_secret(missing):
    r = compose_config({**SECRETS, missing: None})
    assert r.returncode != 0 and f"set {missing}" in r.stderr, r.stderr


def test_the_secrets_command_makes_every_secret_compose_asks_for():
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "make_secrets.py")], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    made = dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))
    assert set(made) == set(SECRETS)
    assert compose_config(made).returncode == 0
    example = (ROOT / ".env.example").read_text()
    assert all(f"{name}=" in example for name in SECRETS)


def _volumes(service: dict) -> list[str]:
    out = []
    for v in service.get("volumes", []):
        out.append(v if isinstance(v, str) else f"{v['source']}:{v['target']}")
    return out


def _dockerfile_lines() -> list[str]:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_the_dockerfile_builds_offline_capable_without_pytorch():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert not text.startswith("# syntax"), "a syntax line makes BuildKit fetch a frontend from Docker Hub"
    assert "ARG PIP_INDEX_URL" in text and "torch" not in " ".join(_dockerfile_lines())
    assert "torch" not in (ROOT / "requirements.txt").read_text().split("# (requirements-dev.txt).")[-1]


def test_the_dockerfile_installs_dependencies_first_runs_unprivileged_and_checks_health():
    lines = _dockerfile_lines()
    assert lines[0].startswith("FROM python:3.11")
    deps = next(i for i, ln in enumerate(lines) if ln.startswith("COPY requirements.txt constraints.txt"))
    pip_deps = next(i for i, ln in enumerate(lines) if "pip install" in ln and "-r requirements.txt" in ln)
    code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY facecodec"))
    assert deps < pip_deps < code, "the dependency layer must come before the code"
    assert [ln.split()[1] for ln in lines if ln.startswith("USER ")][-1] not in ("root", "0")
    assert sum(ln.startswith("HEALTHCHECK") for ln in lines) == 2  # server and edge
    targets = {ln.split()[-1] for ln in lines if ln.startswith("FROM ") and " AS " in ln}
    assert {"server", "edge"} <= targets
    for ln in lines:
        if ln.startswith("COPY ") and "--from" not in ln:
            for src in [a for a in ln.split()[1:-1] if not a.startswith("--")]:
                assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repository"


def test_the_build_context_keeps_environments_and_data_out_but_the_sample_faces_in():
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignore) and "!tests/data" in ignore


# -- the containers' health checks ---------------------------------------------------------------
def _check(mode: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), mode], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=30)


def test_edge_health_needs_a_fresh_status_file_with_a_connected_stream(tmp_path):
    status = tmp_path / "status.json"
    env = {"EDGE_STATUS_FILE": str(status), "EDGE_STATUS_INTERVAL_S": "1"}
    assert _check("edge", **env).returncode == 1  # no file yet
    status.write_text(json.dumps({"connected": "2/2"}))
    assert _check("edge", **env).returncode == 0
    status.write_text(json.dumps({"connected": "0/2"}))
    r = _check("edge", **env)
    assert r.returncode == 1 and "no camera stream connected" in r.stderr
    status.write_text(json.dumps({"connected": "1/2"}))
    old = time.time() - 60
    os.utime(status, (old, old))
    assert "old" in _check("edge", **env).stderr


def test_server_health_is_readyz(tmp_path):
    answers = {"/readyz": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = str(httpd.server_address[1])
        assert _check("server", FACESERVER_HTTP_PORT=port).returncode == 0
        answers["/readyz"] = 503
        assert _check("server", FACESERVER_HTTP_PORT=port).returncode == 1
    finally:
        httpd.shutdown()


def test_a_tool_that_hangs_up_its_process_group_fails_only_its_own_command():
    """mmdebstrap tears down a failed run with SIGHUP to its process group; that group must not be
    pytest's (a full disk once ended a whole CI run with a bare "Hangup" that way)."""
    from deploy.stack import DockerError, _run

    # As mmdebstrap does: SIGHUP to its own process group (the handler reset first: a run under nohup
    # inherits SIGHUP ignored, which a shell's `kill -HUP 0` could not undo).
    hang_up = "import os, signal; signal.signal(signal.SIGHUP, signal.SIG_DFL); os.killpg(0, signal.SIGHUP)"
    with pytest.raises(DockerError, match="exited -1"):
        _run([sys.executable, "-c", hang_up], timeout=30)


def test_a_docker_engine_is_not_started_on_a_disk_too_full_for_the_run(tmp_path, monkeypatch):
    """Below the free space the run needs, starting dockerd stops at once with an error saying so."""
    from deploy import stack

    if shutil.which("docker") is None:
        pytest.skip("no docker client (make test installs Debian's docker.io)")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    monkeypatch.setattr(stack, "NEEDS_FREE_GB", free_gb * 10)  # a disk cannot be filled for real here
    host = stack.DockerHost(tmp_path / "engine")
    host.env["DOCKER_HOST"] = f"unix://{tmp_path}/none.sock"  # no engine answers there
    with pytest.raises(stack.DockerError, match="GB free"):
        host.__enter__()
    assert not (tmp_path / "engine" / "data").exists()
