"""Settings that leak or lie: secrets printed in validation errors, misspelt variables ignored,
``--dev`` (which logs its secrets) listening on every interface.

The attacks and accidents (issue 15, item 5), each against a real process (``python -m
analysis_server``, ``python -m edge_agent``) that must refuse to start (exit 2):

- a settings validation error printed every secret: ``FACESERVER_API_KEYS`` with one short key
  printed all the keys, and the same for camera tokens and the storage key (into the logs a
  supervisor keeps);
- unknown ``FACESERVER_*`` and ``FACECODEC_*`` variables were accepted silently although the
  README says they are an error: ``FACESERVER_RETENTON_S=5`` left retention at 7 days and a
  misspelt storage key ran in plaintext;
- ``--dev`` makes random secrets and logs them; with ``--host 0.0.0.0`` anyone on the network
  could use them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit.processes import ROOT, clean_env

pytestmark = pytest.mark.slow

GOOD_KEY = "a-very-secret-api-key-0123456789"
GOOD_TOKEN = "a-very-secret-camera-token-9876543210"
STORAGE_LIKE = "c2VjcmV0LXN0b3JhZ2Uta2V5LXRoYXQtaXMtbm90LTMy"  # base64, but not 32 bytes


def _server(tmp_path, *args: str, secrets: bool = True, **env: str) -> subprocess.CompletedProcess:
    # A plain run, not testkit's ServerProcess: these servers must refuse to start (exit 2), and what
    # they print is checked; the launcher would give them secrets and wait for them to be ready.
    base = {"FACESERVER_DATA_DIR": str(tmp_path / "srv"), "FACESERVER_GRPC_PORT": "0", "FACESERVER_HTTP_PORT": "0"}
    if secrets:
        base |= {"FACESERVER_API_KEYS": GOOD_KEY, "FACESERVER_CAMERA_TOKENS": json.dumps({"cam-1": GOOD_TOKEN})}
    return subprocess.run([sys.executable, "-m", "analysis_server", *args], cwd=ROOT, env=clean_env(**{**base, **env}),
                          capture_output=True, text=True, timeout=120)


def _edge(tmp_path, **env: str) -> subprocess.CompletedProcess:
    base = {"EDGE_TOKEN": GOOD_TOKEN, "EDGE_DATA_DIR": str(tmp_path / "edge")}
    return subprocess.run([sys.executable, "-m", "edge_agent", "--source", str(tmp_path), "--camera-id", "cam-1"],
                          cwd=ROOT, env=clean_env(**{**base, **env}), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env", [
    {"FACESERVER_API_KEYS": f"short,{GOOD_KEY}"},
    {"FACESERVER_CAMERA_TOKENS": json.dumps({"cam-1": GOOD_TOKEN, "cam-2": "short"})},
    {"FACESERVER_STORAGE_KEY": STORAGE_LIKE},
], ids=["api-keys", "camera-tokens", "storage-key"])
def test_a_settings_error_names_the_setting_but_never_prints_a_secret(tmp_path, env):
    done = _server(tmp_path, **env)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "invalid settings" in out
    for secret in (GOOD_KEY, GOOD_TOKEN, STORAGE_LIKE, "short"):
        assert secret not in out.replace("shorter", ""), f"{secret!r} printed:\n{out}"


def test_an_edge_settings_error_never_prints_a_secret(tmp_path):
    cameras = json.dumps([{"id": "not a valid id", "source": str(tmp_path), "token": GOOD_TOKEN}])
    for env in ({"EDGE_CAMERAS": cameras}, {"EDGE_STORAGE_KEY": STORAGE_LIKE}):
        done = subprocess.run([sys.executable, "-m", "edge_agent"], cwd=ROOT,
                              env=clean_env(EDGE_TOKEN=GOOD_TOKEN, **env), capture_output=True, text=True, timeout=120)
        out = done.stdout + done.stderr
        assert done.returncode == 2, out
        assert GOOD_TOKEN not in out and STORAGE_LIKE not in out, out


@pytest.mark.parametrize("name", ["FACESERVER_RETENTON_S", "FACESERVER_STORAGE_KY", "FACECODEC_MODEL_DRI"])
def test_an_unknown_variable_stops_the_server(tmp_path, name):
    done = _server(tmp_path, **{name: "5"})
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert name in out and "unknown setting" in out


def test_a_removed_variable_stops_the_server_saying_why(tmp_path):
    done = _server(tmp_path, FACESERVER_TORCH_THREADS="2")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "FACESERVER_TORCH_THREADS" in out and "removed" in out and "no PyTorch" in out


def test_an_unknown_codec_variable_stops_the_edge_agent(tmp_path):
    done = _edge(tmp_path, FACECODEC_MODEL_DRI="/tmp")
    assert done.returncode == 2 and "FACECODEC_MODEL_DRI" in done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_dev_mode_refuses_a_non_loopback_address(tmp_path, host):
    done = _server(tmp_path, "--dev", "--host", host, secrets=False)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "--dev" in out and "loopback" in out
    assert "development mode: REST API key" not in out  # no secret was made, let alone logged


def test_dev_mode_on_loopback_still_starts(tmp_path):
    # A plain process, not testkit's ServerProcess: that one always gives the server secrets, and
    # --dev is started here without any.
    env = {**clean_env(), "FACESERVER_DATA_DIR": str(tmp_path / "srv")}
    proc = subprocess.Popen([sys.executable, "-m", "analysis_server", "--dev", "--host", "127.0.0.1", "--grpc-port",
                             "0", "--http-port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "analysis server ready" in line:
                break
        else:
            pytest.fail("the dev server did not start")
    finally:
        proc.terminate()
        proc.wait(60)
    assert os.path.isdir(tmp_path / "srv")
