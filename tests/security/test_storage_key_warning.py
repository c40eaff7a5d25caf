"""A production server without ``FACESERVER_STORAGE_KEY`` says so loudly: at start and in ``/readyz``.

The risk (issue 15, item 1): without the key every base layer, feature and enhancement layer is
written in plaintext to Redis and its files, and nothing told the operator. The server still starts
(see the README, "Encryption at rest", for why the key is not required), but it logs a warning at
start and ``/readyz`` lists it under ``warnings`` for as long as it runs. Real server processes
(``python -m analysis_server``) on the session's redis-server, real HTTP.
"""

from __future__ import annotations

import base64
import json
import os

import httpx
import pytest

from testkit.processes import launch_server

pytestmark = pytest.mark.slow

KEY = base64.b64encode(os.urandom(32)).decode()
SECRETS = {"FACESERVER_API_KEYS": "warn-api-key-0001", "FACESERVER_CAMERA_TOKENS": json.dumps({"cam-1": "warn-token-001"})}


def _start(redis_url: str, data_dir, **env):
    proc, _, http, lines = launch_server(redis_url, data_dir, FACESERVER_KEY_PREFIX="warn", **SECRETS, **env)
    try:
        ready = httpx.get(f"http://127.0.0.1:{http}/readyz", timeout=10)
    finally:
        proc.terminate()
        proc.wait(60)
    return ready, "".join(lines)


def test_a_missing_storage_key_is_a_warning_at_start_and_in_readyz(redis_url, tmp_path):
    ready, log = _start(redis_url, tmp_path / "a")
    assert ready.status_code == 200
    warnings = ready.json()["warnings"]
    assert any("FACESERVER_STORAGE_KEY is not set" in w for w in warnings), ready.json()
    assert "WARNING" in log and "FACESERVER_STORAGE_KEY is not set" in log

    ready, log = _start(redis_url, tmp_path / "b", FACESERVER_STORAGE_KEY=KEY)
    assert ready.status_code == 200 and ready.json()["warnings"] == []
    assert "FACESERVER_STORAGE_KEY" not in log and KEY not in log
