"""gRPC over TLS and REST over HTTPS from settings, with certificates this test makes; mTLS; the edge's TLS client."""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from server_testkit import API_KEY, TOKENS, ServerThread, observation

from analysis_server.errors import ConfigurationError
from analysis_server.runtime import AnalysisServer
from analysis_server.settings import ServerSettings
from edge_agent.client import CameraStream, StreamConfig
from edge_agent.settings import CameraConfig, EdgeSettings
from edge_agent.spool import Spool
from edge_agent.status import Counters
from edge_agent.texture import TextureStore
from facewire.v1 import ingest_pb2 as pb
from facewire.v1 import ingest_pb2_grpc
from testkit.processes import wait_until

pytestmark = pytest.mark.slow
CAMERA_MD = (("x-camera-id", "cam-1"), ("authorization", f"Bearer {TOKENS['cam-1']}"))


@pytest.fixture(scope="module")
def base_layer_payload() -> bytes:
    from bench.ingest import payloads

    return payloads(1)[0]


@pytest.fixture
def tls_server(make_server, pki):
    return make_server(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)


def https_url(server: ServerThread) -> str:
    return f"https://127.0.0.1:{server.server.http_port}"


def trusting(ca) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status


def tls_channel(server: ServerThread, pki, ca=None, client_cert: bool = False) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca).read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None)
    return grpc.secure_channel(server.grpc_target, creds)


def send_one(channel: grpc.Channel, face_id: str, base: bytes) -> pb.Ack:
    """One batch of one observation on a new stream; its Ack."""
    msgs = iter([pb.EdgeMessage(observations=pb.ObservationBatch(observations=[observation(face_id, base)]))])
    call = ingest_pb2_grpc.FaceIngestStub(channel).Stream(msgs, metadata=CAMERA_MD, timeout=30)
    for msg in call:
        if msg.WhichOneof("kind") == "ack":
            call.cancel()
            return msg.ack
    raise AssertionError("the stream ended without an ack")


def test_grpc_serves_tls_with_the_certificate_from_settings_and_refuses_plaintext(tls_server, pki, base_layer_payload):
    with tls_channel(tls_server, pki) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        ack = send_one(channel, "tls-face-1", base_layer_payload)
        assert list(ack.face_ids) == ["tls-face-1"] and not ack.rejected
    with grpc.insecure_channel(tls_server.grpc_target) as plain, pytest.raises(grpc.RpcError) as plain_error:
        health(plain)
    assert plain_error.value.code() == grpc.StatusCode.UNAVAILABLE
    with tls_channel(tls_server, pki, ca=pki.other_ca) as untrusted, pytest.raises(grpc.RpcError) as bad_ca:
        health(untrusted)  # a client that does not trust the server's CA does not connect
    assert bad_ca.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_serves_https_with_the_certificate_from_settings_and_refuses_plaintext(tls_server, pki):
    with httpx.Client(base_url=https_url(tls_server), verify=trusting(pki.ca), timeout=10) as c:
        assert c.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200
        assert c.get("/stats").status_code == 401  # HTTPS changes nothing about the keys
        assert c.get("/healthz").json() == {"status": "ok"}
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.server.http_port}/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError):  # certificate not signed by a CA the client trusts
        httpx.get(f"{https_url(tls_server)}/healthz", verify=trusting(pki.other_ca), timeout=10)


def test_grpc_requires_a_client_certificate_signed_by_the_client_ca_when_one_is_set(make_server, pki, base_layer_payload):
    server = make_server(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca)
    with tls_channel(server, pki, client_cert=True) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert list(send_one(channel, "mtls-face-1", base_layer_payload).face_ids) == ["mtls-face-1"]
    with tls_channel(server, pki, client_cert=False) as anonymous, pytest.raises(grpc.RpcError) as error:
        health(anonymous)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_edge_agent_streams_over_tls_with_its_root_ca_setting(tls_server, pki, tmp_path, base_layer_payload):
    settings = EdgeSettings(server=tls_server.grpc_target, token=TOKENS["cam-1"], tls_ca_file=pki.ca,
                            data_dir=tmp_path / "edge")
    tls = settings.channel_tls()
    assert tls is not None and tls.root_ca == pki.ca.read_bytes()
    spool = Spool(tmp_path / "spool.sqlite3", 1 << 24)
    texture = TextureStore(tmp_path / "texture.sqlite3", 1 << 24, 3600)
    executor = ThreadPoolExecutor(1)

    def stream(tls_config) -> tuple[CameraStream, Counters]:
        counters = Counters()
        camera = CameraConfig(id="cam-1", source="0")
        config = StreamConfig.for_camera(settings, camera, backoff_initial_s=0.05, backoff_max_s=0.2, tls=tls_config)
        return CameraStream(config, spool, texture, counters, executor), counters

    def spool_one(face_id: str) -> None:
        spool.put("cam-1", face_id, observation(face_id, base_layer_payload).SerializeToString())

    spool_one("edge-tls-1")
    secure, _ = stream(tls)
    secure.start()
    try:
        wait_until(lambda: len(spool) == 0, timeout=30, what="the server's ack over TLS")
        assert tls_server.call(tls_server.services.store.get("edge-tls-1")) is not None
    finally:
        secure.stop()
    spool_one("edge-plain-1")
    plain, counters = stream(None)  # the same agent without TLS cannot reach the TLS server
    plain.start()
    try:
        wait_until(lambda: counters["reconnects"] >= 2, timeout=30, what="failed plaintext attempts")
        assert len(spool) == 1 and not plain.connected
        assert tls_server.call(tls_server.services.store.get("edge-plain-1")) is None
    finally:
        plain.stop()
        executor.shutdown()


def test_tls_settings_come_in_pairs_and_unreadable_files_are_named(redis_url, pki, tmp_path):
    with pytest.raises(ValidationError, match="tls_key_file"):
        ServerSettings(api_keys=API_KEY, tls_cert_file=pki.server_cert)
    with pytest.raises(ValidationError, match="tls_client_ca_file"):
        ServerSettings(api_keys=API_KEY, tls_client_ca_file=pki.ca)
    with pytest.raises(ValidationError, match="EDGE_TLS_KEY_FILE"):
        EdgeSettings(token="t" * 8, tls_cert_file=pki.client_cert)
    missing = ServerSettings(host="127.0.0.1", grpc_port=0, http_port=0, redis_url=redis_url, key_prefix="sec-missing",
                             api_keys=API_KEY, camera_tokens=TOKENS, tls_cert_file=pki.server_cert,
                             tls_key_file=tmp_path / "missing.key")
    with pytest.raises(ConfigurationError, match="FACESERVER_TLS_KEY_FILE"):
        asyncio.run(AnalysisServer(missing).start())  # refuses to start (the command line exits 2)
