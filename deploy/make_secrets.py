"""Random secrets for docker-compose.yml, as an ``.env`` file: ``python deploy/make_secrets.py > .env``.

Every secret the compose file asks for, each from the operating system's random source: the REST
API key (what operators sign in with), one token per camera, the Redis password and the two AES-256
storage keys (the server's and the edge's: each side holds only its own). Keep the file private (``chmod 600 .env``); anyone who reads it can read the faces.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import base64
import secrets
import sys

CAMERAS = ("entrance", "lobby")  # the cameras docker-compose.yml declares


def env_file() -> str:
    lines = ["# made by `python deploy/make_secrets.py`; keep private (chmod 600)",
             f"FACESERVER_API_KEYS={secrets.token_hex(16)}",
             f"FACESERVER_STORAGE_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}",
             f"EDGE_STORAGE_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}",
             f"REDIS_PASSWORD={secrets.token_hex(24)}"]
    lines += [f"{camera.upper()}_TOKEN={secrets.token_hex(16)}" for camera in CAMERAS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(env_file())
