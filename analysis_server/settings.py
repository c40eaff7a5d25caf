"""Settings of the analysis server, read from ``FACESERVER_*`` environment variables.

Command-line flags of ``python -m analysis_server`` override them (see ``__main__``). Secrets
(REST API keys, camera tokens) have no working default: without them the server refuses to
start, unless ``dev_mode`` is on, in which case it makes random ones and logs them once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from analysis_server.errors import ConfigurationError

ANY_CAMERA = "*"
# Settings that went away: one in the environment is an error that says why.
REMOVED = {"FACESERVER_TORCH_THREADS": "removed (the server runs no PyTorch; FACESERVER_BLAS_THREADS is numpy's and FAISS's)"}


def fingerprint(secret: str) -> str:
    """A short, non-reversible name for a secret (audit log, logs): never the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class ServerSettings(BaseSettings):
    """Everything the analysis server can be told; the README's settings table mirrors this."""

    # hide_input_in_errors: a validation error names the setting and the problem, never the value
    # (FACESERVER_API_KEYS with one short key printed every key).
    model_config = SettingsConfigDict(env_prefix="FACESERVER_", extra="forbid", populate_by_name=True,
                                      hide_input_in_errors=True)

    host: str = Field(default="127.0.0.1", description="address both servers bind")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC ingest port (0 = any free port)")
    http_port: int = Field(default=8080, ge=0, le=65535, description="REST port (0 = any free port)")
    data_dir: Path = Field(default=Path("var/server"), description="embedded Redis files (`faces.rdb`, "
                           "`appendonly.aof`, log) and the search index's files")
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("FACESERVER_REDIS_URL", "REDIS_URL", "redis_url"),
                                  description="external Redis (`redis://`, `rediss://`, `unix://`; several URLs, "
                                  "comma-separated, are a cluster); unset = embedded")
    redis_cluster_url: str | None = Field(default=None, validation_alias=AliasChoices(
        "FACESERVER_REDIS_CLUSTER_URL", "REDIS_CLUSTER_URL", "redis_cluster_url"),
        description="a Redis Cluster: one or more node URLs, comma-separated (see \"Redis Cluster\")")
    key_prefix: str = Field(default="fs", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="prefix of every Redis key")

    # Secrets: kept out of repr (logs, tracebacks); Credentials keeps only their digests.
    camera_tokens: dict[str, str] = Field(default_factory=dict, repr=False, description=(
        'JSON `{"camera id": "token"}`, one token per camera (8+ characters; make each with `openssl rand -base64 24`); '
        "required unless `--dev`"))
    api_keys: str = Field(default="", repr=False, description="comma-separated REST keys (8+ characters each); "
                          "required unless `--dev`")
    dev_mode: bool = Field(default=False, description="make random secrets for those not set, and log them; refused "
                           "with a host that is not loopback")

    retention_s: int = Field(default=7 * 24 * 3600, gt=0, description="a face record (base layer, match, index "
                             "entries) expires this long after capture (604800: 7 days)")
    enhancement_timeout_s: float = Field(default=10.0, gt=0, le=300, description="wait for an edge's enhancement upload")
    enhancement_ttl_s: int = Field(default=24 * 3600, gt=0, description="a fetched enhancement layer stays cached "
                                   "(never past the face's expiry)")
    # LFW-calibrated on decoded base-layer features at the default step (eval/results/rate_accuracy.json,
    # default_point.threshold: all 6000 pairs, FAR 1.47 %, FRR 1.10 %; base-layer format 2, step 0.055).
    match_threshold: float = Field(default=0.571577, gt=0, le=4, description="Euclidean distance at or below which "
                                   "faces match (LFW-calibrated, see \"Matching\")")
    exact_search_max: int = Field(default=50_000, ge=0, description="gallery rows searched exactly with numpy; "
                                  "FAISS beyond")
    faiss_nlist: int = Field(default=0, ge=0, description="the gallery's FAISS inverted lists (0 = about sqrt(rows))")
    faiss_nprobe: int = Field(default=64, ge=1, description="the gallery's lists probed per query")

    # Retrospective search index (history.py): FAISS IVF-PQ over every stored face, one partition per day.
    history_index: bool = Field(default=True, description="keep the retrospective search index (`POST /search`); "
                                "off: search scans the records")
    history_nlist: int = Field(default=1024, ge=1, le=65536, description="the search index's inverted lists")
    history_pq_bytes: int = Field(default=16, ge=1, le=128, description="bytes of each face's product-quantizer "
                                  "code (divides the feature's 128 values)")
    history_nprobe: int = Field(default=64, ge=1, description="fewest lists probed per day searched")
    history_scan_codes: int = Field(default=2_000_000, ge=1, description="codes one search may scan over its "
                                    "window's days: more lists are probed while the window is small")
    history_rerank: int = Field(default=512, ge=10, le=10_000, description="candidates re-ranked exactly from Redis")
    history_snapshot_s: float = Field(default=300.0, gt=0, description="the index's files are saved this often "
                                      "(a restart reads the change log since)")

    grpc_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024,
                                        description="largest gRPC message either way")
    grpc_grace_s: float = Field(default=5.0, ge=0, description="grace for open streams at shutdown")
    max_batch: int = Field(default=1024, ge=1, description="observations per message; the rest are rejected")
    scan_max: int = Field(default=100_000, ge=1, description="index entries one REST request may scan (`/faces` "
                          "filters, `/search`); then it answers `truncated`")
    scan_time_s: float = Field(default=5.0, gt=0, description="how long one REST request may scan (one chunk at least)")
    events_live_per_caller: int = Field(default=8, ge=1, description="`/events/live` streams open at once per API "
                                        "key (429 beyond), per replica")
    events_live_max: int = Field(default=64, ge=1, description="`/events/live` streams open at once in all (503 "
                                 "beyond), per replica")
    events_backlog_max: int = Field(default=500, ge=0, le=10_000, description="events replayed when a live stream "
                                    "opens after an event id (the newest ones)")
    watchlist_gap_s: float = Field(default=300.0, gt=0, description="watchlist hits of one identity with no longer "
                                   "pause than this between two are one alert (hit group)")
    watchlist_scan: int = Field(default=10_000, ge=100, le=1_000_000, description="newest events the hit groups are "
                                "computed from")
    max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="largest enrolment photo")
    events_max: int = Field(default=100_000, ge=100, description="approximate length cap of the events stream")
    audit_max: int = Field(default=1_000_000, ge=100, description="approximate length cap of the audit log")
    audit_retention_s: int = Field(default=400 * 24 * 3600, gt=0, description="audit entries older than this are "
                                   "deleted by the sweep (400 days: it must outlive the faces it accounts for)")
    sweep_interval_s: float = Field(default=60.0, gt=0, description="retention sweep: face records past retention "
                                    "deleted, time indexes, events and audit trimmed")
    # Erased means gone from Redis's files: AOF rewrite + RDB save after erasures and on a timer (compaction.py).
    redis_compact: bool = Field(default=True, description="ask Redis to rewrite its AOF (`BGREWRITEAOF`) and RDB "
                                "(`BGSAVE`) after erasures and on a timer (see \"Erasure\")")
    compact_after_erase_s: float = Field(default=60.0, ge=0, description="an erasure (or expiry found by the sweep) "
                                         "is rewritten out of Redis's files this long after it, batched with the others")
    compact_interval_s: float = Field(default=3600.0, gt=0, description="Redis's files are rewritten at least this often")
    replica_id: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]{0,64}$", description="this replica's name among "
                            "those sharing one Redis (empty: random at start)")
    owner_ttl_s: float = Field(default=30.0, ge=1, description="a replica's claim on a camera's stream expires "
                               "unless refreshed (every third of it)")
    session_ttl_s: int = Field(default=12 * 3600, ge=60, description="a dashboard login lasts this long")
    session_cookie_secure: bool = Field(default=False, description="mark the session cookie `Secure` also for "
                                        "plain-HTTP requests (TLS ends at a proxy)")
    # Wrong credentials: counted per client (IPv4 address, IPv6 /64) and per camera id, in this
    # process (per replica); past the limit they are refused slowly. Valid ones never are (auth.py).
    auth_fail_limit: int = Field(default=100, ge=0, description="wrong credentials from one client (IPv4 address, "
                                 "IPv6 /64), or for one camera id, within the window before its wrong credentials "
                                 "are throttled (0 = off; see \"Lockout\")")
    auth_fail_window_s: float = Field(default=60.0, gt=0, description="the window those failures are counted in")
    auth_lockout_s: float = Field(default=300.0, gt=0, description="how long a client's (or camera's) wrong "
                                  "credentials get 429 / `RESOURCE_EXHAUSTED` instead of 401 / `UNAUTHENTICATED`; "
                                  "valid ones are never refused")
    auth_fail_delay_s: float = Field(default=1.0, ge=0, le=30, description="each of those answers waits this long "
                                     "(at most 4 held per client or camera)")
    trusted_proxies: str = Field(default="", pattern=r"^[0-9A-Fa-f.:/, ]*$", description="reverse proxies "
                                 "(addresses or networks, comma-separated) whose `X-Forwarded-For` names the client; "
                                 "none: the header is ignored")
    metrics_public: bool = Field(default=False, description="serve `/metrics` without a key (a scraper on a private "
                                 "network); otherwise it needs one like every route")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain): gRPC over TLS and REST "
                                       "over HTTPS (with the key; unset: plaintext)")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of the certificate")
    tls_client_ca_file: Path | None = Field(default=None, description="PEM CA: gRPC clients must present a "
                                            "certificate it signed (mutual TLS; needs the two above)")
    max_upload_pixels: int = Field(default=40_000_000, ge=1, description="largest enrolment photo in pixels "
                                   "(checked from its header, before decoding)")
    storage_key: str | None = Field(default=None, repr=False, description="encryption at rest (AES-256-GCM) of base "
                                    "layers, enrolled features and enhancement layers in Redis and of the search "
                                    "index's files: base64 of 32 bytes (`openssl rand -base64 32`); unset: plaintext, "
                                    "a warning at start and in `/readyz` (see at_rest.py)")
    blas_threads: int = Field(default=1, ge=1, description="numpy / FAISS threads (1: per-face work is small)")
    log_level: str = Field(default="INFO", description="logging level")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_environment(cls, data: object) -> object:
        # pydantic-settings ignores unknown variables; a misspelt one must not pass silently
        # (FACESERVER_RETENTON_S=5 kept 7 days, a misspelt storage key ran in plaintext).
        known = {f"FACESERVER_{name.upper()}" for name in cls.model_fields}
        removed = sorted(k for k in os.environ if k.upper() in REMOVED)
        if removed:
            raise ValueError("removed setting(s) in the environment: " +
                             ", ".join(f"{k}: {REMOVED[k.upper()]}" for k in removed))
        problems = unknown_environment("FACESERVER_", known)
        if problems:
            raise ValueError(problems)
        return data

    @field_validator("api_keys")
    @classmethod
    def _keys_have_no_blanks(cls, v: str) -> str:
        keys = [k.strip() for k in v.split(",") if k.strip()]
        if any(len(k) < 8 for k in keys):
            raise ValueError("every API key must have at least 8 characters")
        return ",".join(keys)

    @field_validator("camera_tokens")
    @classmethod
    def _tokens_are_long_enough(cls, v: dict[str, str]) -> dict[str, str]:
        for camera, token in v.items():
            if not camera or not token or len(token) < 8:
                raise ValueError(f"camera {camera!r}: a camera token must have at least 8 characters")
        return v

    @field_validator("storage_key")
    @classmethod
    def _storage_key_is_aes256(cls, v: str | None) -> str | None:
        from analysis_server.at_rest import parse_key

        if v is not None and v.strip():
            parse_key(v)
            return v.strip()
        return None

    @property
    def storage_key_bytes(self) -> bytes | None:
        """The AES-256 key of ``FACESERVER_STORAGE_KEY``, or None (values stored in plaintext)."""
        from analysis_server.at_rest import parse_key

        return parse_key(self.storage_key) if self.storage_key else None

    @model_validator(mode="after")
    def _dev_only_on_loopback(self) -> ServerSettings:
        if self.dev_mode and not is_loopback(self.host):
            raise ValueError(f"--dev makes secrets and logs them, so it binds a loopback address only (127.0.0.1, "
                             f"::1, localhost), not {self.host!r}; set real secrets to listen on other addresses")
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> ServerSettings:
        if self.grpc_port and self.grpc_port == self.http_port:
            raise ValueError(f"grpc_port and http_port are both {self.grpc_port}")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file (FACESERVER_TLS_CERT_FILE, "
                             "FACESERVER_TLS_KEY_FILE), or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (the server's own certificate)")
        return self

    @model_validator(mode="after")
    def _pq_divides_dimensions(self) -> ServerSettings:
        from analysis_server import features

        if features.dim() % self.history_pq_bytes:
            raise ValueError(f"history_pq_bytes must divide the feature's {features.dim()} dimensions, "
                             f"not {self.history_pq_bytes}")
        return self

    @property
    def redis_target(self) -> tuple[str | None, bool]:
        """(Redis URL or node URL list, whether it is a cluster); no URL: the embedded Redis."""
        if self.redis_cluster_url:
            return self.redis_cluster_url, True
        return self.redis_url, bool(self.redis_url and "," in self.redis_url)

    @property
    def tls(self) -> bool:
        """Whether both servers speak TLS (gRPC) and HTTPS (REST)."""
        return self.tls_cert_file is not None

    @property
    def api_key_list(self) -> list[str]:
        return [k for k in self.api_keys.split(",") if k]

    def require_secrets(self) -> ServerSettings:
        """Check that secrets are set (or make development ones): raises :class:`ConfigurationError`."""
        missing = []
        if not self.api_key_list:
            missing.append("FACESERVER_API_KEYS (comma-separated REST keys)")
        if not self.camera_tokens:
            missing.append("FACESERVER_CAMERA_TOKENS (JSON object camera id -> token)")
        if missing and not self.dev_mode:
            raise ConfigurationError("no secrets configured: set " + " and ".join(missing) +
                                     ", or pass --dev to make random ones for a local run")
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unknown_environment(prefix: str, known: set[str]) -> str:
    """A message naming the ``prefix`` variables of the environment that are not in ``known`` (and the
    ``FACECODEC_*`` ones the codec library does not know), or "" when there are none."""
    from facecodec.settings import CodecSettings

    codec = {f"FACECODEC_{name.upper()}" for name in CodecSettings.model_fields}
    unknown = sorted(k for k in os.environ if (k.upper().startswith(prefix) and k.upper() not in known)
                     or (k.upper().startswith("FACECODEC_") and k.upper() not in codec))
    if not unknown:
        return ""
    return (f"unknown setting(s) in the environment: {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known | codec))}")


def parse_camera_tokens(value: str) -> dict[str, str]:
    """``{"cam-1": "token"}`` JSON, as in ``FACESERVER_CAMERA_TOKENS``."""
    try:
        out = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"camera tokens are not JSON: {e}") from e
    if not isinstance(out, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in out.items()):
        raise ConfigurationError('camera tokens must be a JSON object of strings, e.g. {"cam-1": "s3cret-token"}')
    return out
