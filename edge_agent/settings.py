"""Settings of the edge agent, read from ``EDGE_*`` environment variables (and the CLI).

One object for the whole service. Unknown ``EDGE_*`` keys are an error, so a misspelt setting
never goes unnoticed. The camera token has no default: an agent cannot start without one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_agent.errors import EdgeAgentError

CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes for a TLS channel: root CA (None: the system's), optional client certificate and key."""

    root_ca: bytes | None = None
    cert_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None


class DetectionConfig(BaseModel):
    """Which faces are looked for and sent (``EDGE_DETECTION``, a camera's ``detection``)."""

    model_config = {"extra": "forbid", "frozen": True}

    min_face_size: float = Field(40.0, ge=12, description="smallest face looked for and sent (pixels, shorter box "
                                                          "side): MTCNN's pyramid starts at 12 / this, so larger is cheaper")
    min_probability: float = Field(0.9, ge=0, le=1, description="less confident detections are not sent")
    factor: float = Field(0.709, gt=0.3, lt=0.95, description="MTCNN's pyramid scale step (coarser is faster)")
    thresholds: tuple[float, float, float] = Field((0.6, 0.7, 0.7), description="MTCNN's P/R/O-Net thresholds")


class MotionConfig(BaseModel):
    """Motion gating (``EDGE_MOTION``, a camera's ``motion``): the detector runs only where the scene changed."""

    model_config = {"extra": "forbid", "frozen": True}

    enabled: bool = Field(True, description="off: detect on every whole frame")
    threshold: int = Field(12, ge=1, le=255, description="grey levels a pixel must change by (1/8-size frame)")
    min_pixels: int = Field(6, ge=1, description="smaller changes (in 1/8-size pixels) are noise")
    hold_s: float = Field(1.0, ge=0, description="a region stays looked at this long after it stopped changing")
    full_frame_fraction: float = Field(0.4, gt=0, le=1, description="above this changed fraction, detect on the "
                                                                    "whole frame")


class TrackingConfig(BaseModel):
    """Tracks and what is sent of them (``EDGE_TRACKING``, a camera's ``tracking``)."""

    model_config = {"extra": "forbid", "frozen": True}

    interval_s: float = Field(5.0, gt=0, description="one observation per track per this many seconds")
    distance: float = Field(0.5, gt=0, le=2, description="feature distance within which a face continues a track "
                                                         "(dlib's same-person threshold is 0.6)")
    max_speed: float = Field(3.0, gt=0, description="box widths per second a face may move between two sightings")
    ttl_s: float = Field(2.0, gt=0, description="a track unseen this long ends (its best face is sent)")
    min_hits: int = Field(2, ge=1, description="a track seen in fewer frames is not sent (false detections)")


class ContextConfig(BaseModel):
    """The context layer (``EDGE_CONTEXT``, a camera's ``context``): a picture of the frame around each
    face sent, kept with its texture (same retention, erasure and encryption) until an operator asks."""

    model_config = {"extra": "forbid", "frozen": True}

    enabled: bool = Field(True, description="keep a context picture of every face sent")
    scale: float = Field(3.0, ge=1, le=20, description="width of the frame region kept, in face sizes (4:3 "
                                                       "portrait, the face in its upper third)")
    size: int = Field(320, ge=16, le=4096, description="longer side of the kept picture in pixels (larger regions "
                                                       "are downscaled, never enlarged)")
    codec: Literal["avif", "webp", "jpeg", "jpeg2000", "png"] = Field("avif", description="image codec of the picture")
    quality: int = Field(50, ge=0, le=100, description="its quality")


class CameraConfig(BaseModel):
    """One camera: its id (as the server knows it), where frames come from, its token, and what it
    does differently from the agent's defaults (any field of ``detection``, ``motion``, ``tracking``,
    ``context``, and ``sample_fps``; the rest is inherited)."""

    model_config = {"extra": "forbid", "frozen": True}

    id: str
    source: str
    token: SecretStr | None = None
    sample_fps: float | None = Field(None, gt=0)
    detection: dict[str, object] = Field(default_factory=dict)
    motion: dict[str, object] = Field(default_factory=dict)
    tracking: dict[str, object] = Field(default_factory=dict)
    context: dict[str, object] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not CAMERA_ID.match(v):
            raise ValueError(f"camera id {v!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return v


@dataclass(frozen=True)
class CameraSettings:
    """One camera's resolved settings (:meth:`EdgeSettings.for_camera`)."""

    sample_fps: float
    detection: DetectionConfig
    motion: MotionConfig
    tracking: TrackingConfig
    context: ContextConfig = ContextConfig()


# Settings that moved into a concern: an old name in the environment is an error that names the new one.
RENAMED = {"EDGE_MIN_FACE_SIZE": "EDGE_DETECTION__MIN_FACE_SIZE", "EDGE_MIN_PROBABILITY": "EDGE_DETECTION__MIN_PROBABILITY",
           "EDGE_TRACK_INTERVAL_S": "EDGE_TRACKING__INTERVAL_S", "EDGE_TRACK_DISTANCE": "EDGE_TRACKING__DISTANCE",
           "EDGE_TRACK_TTL_S": "EDGE_TRACKING__TTL_S", "EDGE_TRACK_MIN_HITS": "EDGE_TRACKING__MIN_HITS",
           "EDGE_TRACK_IOU": "EDGE_TRACKING__MAX_SPEED (box overlap no longer joins tracks)",
           "EDGE_TORCH_THREADS": "EDGE_CORES (the networks no longer run in PyTorch)",
           "EDGE_DESCRIPTOR_ENGINE": "FACECODEC_DLIB_ENGINE (one setting for the codec library and the agent)"}


class EdgeSettings(BaseSettings):
    """Everything the agent can be told; each field is ``EDGE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", extra="forbid", hide_input_in_errors=True, env_nested_delimiter="__")

    # -- where to send, who we are ----------------------------------------------------------
    server: str = Field("127.0.0.1:50051", description="analysis server gRPC address host:port")
    token: SecretStr | None = Field(None, description="camera token (Bearer) for every camera without its own")
    cameras: list[CameraConfig] = Field(default_factory=list, description="JSON list of {id, source, token?}")
    data_dir: Path = Field(Path("var/edge"), description="spool and texture store live here")
    storage_key: SecretStr | None = Field(None, description="base64 of 32 bytes (openssl rand -base64 32): face crops, "
                                                            "base layers and spooled observations sealed with AES-256-GCM")
    tls: bool = Field(False, description="connect with TLS, trusting the system's root CAs (or tls_ca_file)")
    tls_ca_file: Path | None = Field(None, description="PEM root CA the server's certificate must chain to (turns TLS on)")
    tls_cert_file: Path | None = Field(None, description="PEM client certificate, for servers that require one")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_server_name: str | None = Field(None, description="name to check the server's certificate against "
                                                         "(default: the host of EDGE_SERVER)")

    # -- frames ------------------------------------------------------------------------------
    sample_fps: float = Field(10.0, gt=0, description="frames analysed per second of video (or wall clock, live)")
    loop: bool = Field(False, description="replay file and folder sources forever (a simulated camera)")
    reopen_initial_s: float = Field(1.0, gt=0, description="first wait before reopening a lost live source")
    reopen_max_s: float = Field(30.0, gt=0, description="longest wait between reopen attempts")

    # -- per concern: the defaults every camera inherits and may override ----------------------
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="which faces are looked for and sent")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="where the detector looks (motion gating)")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="tracks, and what is sent of them")
    context: ContextConfig = Field(default_factory=ContextConfig, description="the frame around each face sent, "
                                                                             "kept for operators (the context layer)")
    cores: int | None = Field(None, ge=1, description="cores the analysis may use at once (default: one per camera, "
                                                      "at most the machine's)")

    # -- texture store -----------------------------------------------------------------------
    texture_max_mb: float = Field(512.0, gt=0, description="size cap of the texture store")
    texture_retention_s: float = Field(7 * 24 * 3600.0, gt=0, description="texture older than this is deleted")
    enhancement_codec: str = Field("jpeg", description="codec for requests that name none")
    enhancement_quality: int = Field(75, ge=1, le=100, description="quality for requests that name none")

    # -- spool and stream --------------------------------------------------------------------
    spool_max_mb: float = Field(256.0, gt=0, description="size cap of the spool of unacknowledged observations")
    batch_size: int = Field(64, ge=1, le=1024, description="observations per gRPC message")
    batch_linger_ms: float = Field(2000.0, ge=0, description="wait this long for a batch to fill (each message "
                                                             "costs ~30 bytes of framing each way: longer waits, "
                                                             "fewer bytes per face)")
    max_in_flight: int = Field(512, ge=1, description="observations sent but not acknowledged, per stream")
    ack_timeout_s: float = Field(30.0, gt=0, description="no ack for this long while waiting for one: reconnect")
    backoff_initial_s: float = Field(0.5, gt=0, description="first reconnect delay")
    backoff_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")
    drain_timeout_s: float = Field(10.0, ge=0, description="on shutdown, wait this long for outstanding acks")

    # -- running -----------------------------------------------------------------------------
    exit_when_done: bool = Field(False, description="exit once every source has ended and the spool is empty")
    status_interval_s: float = Field(10.0, gt=0, description="period of the status log line")
    status_file: Path | None = Field(None, description="also write the counters as JSON here")
    feature_backend: str | None = Field(None, description="facecodec feature backend (default: facecodec's)")
    log_level: str = Field("INFO", description="logging level")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_environment(cls, data: object) -> object:
        # pydantic-settings ignores unknown variables; a misspelt EDGE_ one must not pass silently.
        from facecodec.settings import CodecSettings

        known = {f"EDGE_{name.upper()}" for name in cls.model_fields}
        for concern in ("detection", "motion", "tracking", "context"):  # EDGE_DETECTION__MIN_FACE_SIZE and the like
            model = cls.model_fields[concern].annotation
            known |= {f"EDGE_{concern.upper()}__{name.upper()}" for name in model.model_fields}
        renamed = sorted(k for k in os.environ if k.upper() in RENAMED)
        if renamed:
            raise ValueError("renamed setting(s) in the environment: " +
                             ", ".join(f"{k} is now {RENAMED[k.upper()]}" for k in renamed))
        known |= {f"FACECODEC_{name.upper()}" for name in CodecSettings.model_fields}  # the codec library's
        unknown = sorted(k for k in os.environ if k.upper().startswith(("EDGE_", "FACECODEC_"))
                         and k.upper() not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) in the environment: {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return data

    @field_validator("storage_key")
    @classmethod
    def _storage_key_is_aes256(cls, v: SecretStr | None) -> SecretStr | None:
        from edge_agent.at_rest import parse_key

        if v is None or not v.get_secret_value().strip():
            return None
        parse_key(v.get_secret_value())
        return v

    def sealer(self):
        """The :class:`edge_agent.at_rest.Sealer` of ``EDGE_STORAGE_KEY`` (passes values through when unset)."""
        from edge_agent.at_rest import Sealer, parse_key

        return Sealer(parse_key(self.storage_key.get_secret_value()) if self.storage_key else None)

    @model_validator(mode="after")
    def _check(self) -> EdgeSettings:
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique, got {ids}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both EDGE_TLS_CERT_FILE and EDGE_TLS_KEY_FILE (a client certificate), or neither")
        for c in self.cameras:
            if c.token is None and self.token is None:
                raise ValueError(f"camera {c.id!r} has no token: set EDGE_TOKEN (or --token) or the camera's own token")
            self.for_camera(c)  # its overrides are valid fields with valid values
        return self

    def for_camera(self, camera: CameraConfig) -> CameraSettings:
        """What ``camera`` runs with: the agent's defaults with the camera's overrides."""
        def merged(default: BaseModel, override: dict) -> BaseModel:
            try:
                return type(default)(**{**default.model_dump(), **override})
            except ValueError as e:
                raise ValueError(f"camera {camera.id!r}: {e}") from None

        return CameraSettings(camera.sample_fps or self.sample_fps, merged(self.detection, camera.detection),
                              merged(self.motion, camera.motion), merged(self.tracking, camera.tracking),
                              merged(self.context, camera.context))

    @property
    def core_budget(self) -> int:
        """Cores the analysis may use at once: ``cores``, else one per camera up to the machine's."""
        return self.cores or max(1, min(len(self.cameras), os.cpu_count() or 1))

    def token_for(self, camera: CameraConfig) -> str:
        token = camera.token or self.token
        assert token is not None  # checked by the validator
        return token.get_secret_value()

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca_file is not None or self.tls_cert_file is not None

    def channel_tls(self) -> TlsConfig | None:
        """The stream's TLS material, read from the files now (:class:`EdgeAgentError` naming the setting); None: plaintext."""
        if not self.uses_tls:
            return None

        def read(path: Path | None, name: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as e:
                raise EdgeAgentError(f"{name}: cannot read {path}: {e.strerror}") from e

        return TlsConfig(root_ca=read(self.tls_ca_file, "EDGE_TLS_CA_FILE"),
                         cert_chain=read(self.tls_cert_file, "EDGE_TLS_CERT_FILE"),
                         private_key=read(self.tls_key_file, "EDGE_TLS_KEY_FILE"), server_name=self.tls_server_name)

    @property
    def spool_path(self) -> Path:
        return self.data_dir / "spool.sqlite3"

    @property
    def texture_path(self) -> Path:
        return self.data_dir / "texture.sqlite3"
