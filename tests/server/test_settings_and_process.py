"""Settings, the command line, and the whole server as a process: ready line, embedded Redis, SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import ValidationError

from analysis_server.__main__ import parser, settings_from_args
from analysis_server.errors import ConfigurationError
from analysis_server.runtime import with_dev_secrets
from analysis_server.settings import ServerSettings
from testkit.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def test_settings_come_from_faceserver_variables_and_plain_redis_url(monkeypatch):
    monkeypatch.setenv("FACESERVER_GRPC_PORT", "6000")
    monkeypatch.setenv("FACESERVER_CAMERA_TOKENS", '{"cam-9": "secret-token-9"}')
    monkeypatch.setenv("FACESERVER_API_KEYS", "key-aaaaaaaa, key-bbbbbbbb")
    monkeypatch.setenv("REDIS_URL", "redis://db:6379/2")
    s = ServerSettings()
    assert s.grpc_port == 6000 and s.camera_tokens == {"cam-9": "secret-token-9"}
    assert s.api_key_list == ["key-aaaaaaaa", "key-bbbbbbbb"] and s.redis_url == "redis://db:6379/2"
    monkeypatch.setenv("FACESERVER_REDIS_URL", "redis://other:6379/0")
    assert ServerSettings().redis_url == "redis://other:6379/0"


def test_unknown_or_invalid_settings_are_errors(monkeypatch):
    with pytest.raises(ValidationError):
        ServerSettings(grpc_prot=1)
    with pytest.raises(ValidationError):
        ServerSettings(api_keys="short")
    with pytest.raises(ValidationError):
        ServerSettings(grpc_port=7000, http_port=7000)


def test_secrets_have_no_working_default_outside_dev_mode():
    with pytest.raises(ConfigurationError, match="FACESERVER_API_KEYS"):
        with_dev_secrets(ServerSettings())
    dev = with_dev_secrets(ServerSettings(dev_mode=True))
    assert len(dev.api_key_list) == 1 and set(dev.camera_tokens) == {"*"}


def test_command_line_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("FACESERVER_HTTP_PORT", "9000")
    args = parser().parse_args(["--http-port", "9100", "--camera-tokens", '{"*": "fleet-token"}', "--dev",
                                "--match-threshold", "0.5"])
    s = settings_from_args(args)
    assert s.http_port == 9100 and s.camera_tokens == {"*": "fleet-token"} and s.dev_mode and s.match_threshold == 0.5


@pytest.mark.slow
def test_python_m_analysis_server_runs_with_embedded_redis_until_sigterm(tmp_path):
    server = ServerProcess(tmp_path, data_dir=tmp_path / "srv", grpc_port=0, http_port=0,
                           FACESERVER_API_KEYS="proc-key-0001", FACESERVER_CAMERA_TOKENS='{"*": "proc-token-1"}')
    try:
        server.start(timeout=90, readyz=False)  # up to its ready line only: /readyz is asserted here
        http = server.http_port
        r = httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=10)
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{http}/stats", headers={"X-API-Key": "proc-key-0001"}).status_code == 200
        redis_pid = int((tmp_path / "srv" / "redis.pid").read_text())
        server.proc.terminate()  # SIGTERM
        server.wait(60)
    finally:
        server.kill()
    assert server.proc.returncode == 0, server.output()
    assert "analysis server stopped" in server.output()
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)  # the embedded redis-server stopped with it
    assert (tmp_path / "srv" / "appendonly.aof").exists() or (tmp_path / "srv" / "faces.rdb").exists()


def test_missing_secrets_make_the_command_exit_with_a_message(tmp_path):
    # A plain run, not testkit's ServerProcess: that one gives the server secrets, and reads stderr
    # together with stdout; this server must refuse to start, saying so on stderr.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESERVER_")}
    r = subprocess.run([sys.executable, "-m", "analysis_server", "--data-dir", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "FACESERVER_API_KEYS" in r.stderr


def test_embedded_redis_keeps_data_across_a_restart(tmp_path):
    from analysis_server.redis_server import EmbeddedRedis

    first = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(first.start())
    client.set("kept", b"1")
    client.close()
    first.stop()
    second = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(second.start())
    try:
        assert client.get("kept") == b"1"
    finally:
        client.close()
        second.stop()
