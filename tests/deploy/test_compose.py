"""The deployment recipes, checked without a Docker engine (there is none on these machines):
``docker-compose config`` (Debian's docker-compose, installed by ``make test``) validates and
resolves docker-compose.yml, the Dockerfiles are read for what the README promises, and the
containers' health-check script runs against real files and a real HTTP server."""

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
SECRETS = {"FACESERVER_API_KEYS": "compose-key-0001", "FACESERVER_CAMERA_TOKENS": '{"*": "compose-token-01"}',
           "EDGE_TOKEN": "compose-token-01"}
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


def test_redis_persists_to_a_named_volume_and_reports_health(config):
    redis = config["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd and "--save" in cmd
    assert any(v.startswith("redis-data:/data") for v in _volumes(redis))
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_services_start_in_order_of_health(config):
    s = config["services"]
    assert s["analysis"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert s["edge"]["depends_on"] == {"analysis": {"condition": "service_healthy"},
                                       "camera": {"condition": "service_healthy"}}
    assert s["analysis"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert s["edge"]["environment"]["EDGE_SERVER"] == "analysis:50051"
    assert any(v.startswith("server-data:/data") for v in _volumes(s["analysis"]))
    assert any(v.startswith("edge-data:/data") for v in _volumes(s["edge"]))
    sources = [a for a in s["edge"]["command"] if a.startswith("http://camera:8554/")]
    assert sources == ["http://camera:8554/entrance.mjpg", "http://camera:8554/lobby.mjpg"]


def test_secrets_come_from_the_environment(config):
    s = config["services"]
    assert s["analysis"]["environment"]["FACESERVER_API_KEYS"] == SECRETS["FACESERVER_API_KEYS"]
    assert json.loads(s["analysis"]["environment"]["FACESERVER_CAMERA_TOKENS"]) == {"*": "compose-token-01"}
    assert s["edge"]["environment"]["EDGE_TOKEN"] == SECRETS["EDGE_TOKEN"]


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_each_secret(missing):
    r = compose_config({**SECRETS, missing: None})
    assert r.returncode != 0 and f"set {missing}" in r.stderr, r.stderr


def _volumes(service: dict) -> list[str]:
    out = []
    for v in service.get("volumes", []):
        out.append(v if isinstance(v, str) else f"{v['source']}:{v['target']}")
    return out


@pytest.mark.parametrize("name", ["Dockerfile.server", "Dockerfile.edge"])
def test_dockerfiles_install_dependencies_first_run_unprivileged_and_check_health(name):
    text = (ROOT / "deploy" / name).read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    instructions = [ln.split()[0] for ln in lines if ln.split()[0].isupper()]
    assert instructions[0] == "FROM" and "python:3.11" in lines[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in text and "torch==2.14.1" in text
    deps = next(i for i, ln in enumerate(lines) if ln.startswith("COPY requirements.txt constraints.txt"))
    code = next(i for i, ln in enumerate(lines) if ln.startswith("COPY facecodec"))
    pip_deps = next(i for i, ln in enumerate(lines) if "pip install -r /tmp/requirements.txt" in ln)
    assert deps < pip_deps < code, "the dependency layers must come before the code"
    user = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in instructions and "healthcheck.py" in text
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), f"{name} copies {src}, which is not in the repository"
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert f"torch=={torch_pin}" in text


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
