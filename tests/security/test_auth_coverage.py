"""Every REST route and every gRPC method refuses callers without valid credentials.

The routes come from the FastAPI app itself and the methods from the service descriptors, so a
route or method added without authentication fails here. The only open ones are listed below,
each with its reason.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from fastapi.routing import iter_route_contexts
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_testkit import API_KEY, TOKENS

from analysis_server.auth import Credentials
from analysis_server.settings import ServerSettings
from facewire.v1 import ingest_pb2

pytestmark = pytest.mark.slow

# (method, path) -> why it needs no credentials
PUBLIC_ROUTES = {
    ("GET", "/healthz"): "liveness probe of orchestrators (Kubernetes), which send no key; answers only 'ok'",
    ("GET", "/readyz"): "readiness probe, as above; names only which dependency is not ready",
    ("GET", "/"): "redirects to /ui (the dashboard's login form when there is no session)",
    ("GET", "/ui/login"): "the dashboard's login form itself",
    ("POST", "/ui/login"): "takes the API key that opens a session (its failures count toward the lockout)",
}
# Mounts (no methods of their own) -> why they are open
PUBLIC_MOUNTS = {"/ui/static": "the dashboard's own CSS and JavaScript, no data (it serves only its folder)"}
# gRPC services open to anyone: the standard health service (orchestrators' probes carry no token)
PUBLIC_GRPC_SERVICES = {"grpc.health.v1.Health": "health checks of load balancers and orchestrators"}
WRONG = "wrong-key-123456"


def _concrete(path: str) -> str:
    return (path.replace("{face_id}", "f-1").replace("{identity_id}", "i-1").replace("{feature_id}", "x-1"))


def rest_routes(app) -> tuple[list[tuple[str, str]], list[str]]:
    """(method, path) of every route of ``app``, and the paths of its mounts."""
    contexts = list(iter_route_contexts(app.routes))
    mounts = [r.path for r in contexts if getattr(r, "methods", None) is None]
    return sorted({(m, r.path) for r in contexts if getattr(r, "methods", None) for m in r.methods}), mounts


def unprotected_routes(app, base_url: str) -> list[tuple[str, str, dict, int]]:
    """Routes not in PUBLIC_ROUTES that answer anything but 401 to a request without valid credentials."""
    routes, _ = rest_routes(app)
    found = []
    attempts = ({}, {"X-API-Key": WRONG}, {"Authorization": f"Bearer {WRONG}"}, {"Cookie": f"fs_session={WRONG}"})
    with httpx.Client(base_url=base_url, timeout=10) as anon:
        for method, path in routes:
            if (method, path) in PUBLIC_ROUTES:
                continue
            for headers in attempts:
                r = anon.request(method, _concrete(path), headers=headers)
                if r.status_code != 401:
                    found.append((method, path, headers, r.status_code))
                elif (path.startswith("/ui") or path == "/docs") and "text/html" in r.headers["content-type"]:
                    assert 'name="api_key"' in r.text, (method, path)  # a dashboard page: the login form
                else:
                    assert r.headers.get("www-authenticate") == "Bearer", (method, path)
    return found


@pytest.fixture
def server(make_server):
    return make_server(auth_fail_limit=0)  # the lockout is tested on its own; here every refusal must be a 401


def test_every_rest_route_but_the_listed_public_ones_refuses_requests_without_valid_credentials(server):
    app = server.server.app
    routes, mounts = rest_routes(app)
    assert len(routes) >= 25 and ("GET", "/metrics") in routes and ("GET", "/openapi.json") in routes
    assert set(PUBLIC_ROUTES) <= set(routes), "an exception names a route that no longer exists"
    assert sorted(mounts) == sorted(PUBLIC_MOUNTS)
    assert unprotected_routes(app, server.http_url) == []
    with httpx.Client(base_url=server.http_url, timeout=10) as anon:
        for method, path in PUBLIC_ROUTES:  # the exceptions really are open
            if method == "GET":
                assert anon.get(path, follow_redirects=False).status_code in (200, 307), path
        assert anon.get("/ui/static/dashboard.css").status_code == 200
        assert anon.get("/stats", headers={"X-API-Key": API_KEY}).status_code == 200


def test_a_route_added_without_authentication_is_found_by_the_route_check(server):
    app = server.server.app
    app.add_api_route("/leak", lambda: {"secret": "data"}, methods=["GET"])  # what a careless change would do
    try:
        found = unprotected_routes(app, server.http_url)
    finally:
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/leak"]
    assert {(m, p) for m, p, _, _ in found} == {("GET", "/leak")}


def test_metrics_need_a_key_unless_configured_public(make_server):
    closed = make_server(auth_fail_limit=0)
    with httpx.Client(base_url=closed.http_url, timeout=10) as c:
        assert c.get("/metrics").status_code == 401
        r = c.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200 and "faceserver_observations_total" in r.text
    public = make_server(auth_fail_limit=0, metrics_public=True)
    with httpx.Client(base_url=public.http_url, timeout=10) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/stats").status_code == 401  # only /metrics opens
    assert {(m, p) for m, p, _, _ in unprotected_routes(public.server.app, public.http_url)} == {("GET", "/metrics")}


# -- gRPC -----------------------------------------------------------------------------------------
def grpc_methods() -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every method of every facewire service."""
    return [(f"/{s.full_name}/{m.name}", m.client_streaming, m.server_streaming)
            for s in ingest_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods]


def call_without_valid_token(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool,
                             metadata) -> grpc.StatusCode:
    """The status of one call of ``path`` with raw (empty) messages."""
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[client_streaming, server_streaming]
    request = iter([b""]) if client_streaming else b""
    try:
        result = kind(path)(request, metadata=metadata, timeout=10)
        if server_streaming:
            list(result)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_every_grpc_method_refuses_calls_without_valid_camera_credentials(server):
    methods = grpc_methods()
    assert ("/facewire.v1.FaceIngest/Stream", True, True) in methods
    attempts = [(), (("x-camera-id", "cam-1"),), (("x-camera-id", "cam-1"), ("authorization", "Bearer wrong-token")),
                (("x-camera-id", "cam-2"), ("authorization", f"Bearer {TOKENS['cam-1']}")),  # another camera's token
                (("x-camera-id", "cam-1"), ("authorization", TOKENS["cam-1"]))]  # no Bearer scheme
    with grpc.insecure_channel(server.grpc_target) as channel:
        for path, cs, ss in methods:
            for md in attempts:
                assert call_without_valid_token(channel, path, cs, ss, md) == grpc.StatusCode.UNAUTHENTICATED, (path, md)
        # the only open service: health, by design
        assert set(PUBLIC_GRPC_SERVICES) == {health_pb2.DESCRIPTOR.services_by_name["Health"].full_name}
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert server.services.link.online() == {}  # no refused call ever opened a camera session


# -- secrets at rest in memory --------------------------------------------------------------------
def _everything_in(obj, seen=None) -> str:
    """The reprs of ``obj`` and, recursively, of every attribute and item it holds."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return ""
    seen.add(id(obj))
    parts = [repr(obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            parts += [_everything_in(k, seen), _everything_in(v, seen)]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        parts += [_everything_in(v, seen) for v in obj]
    elif hasattr(obj, "__dict__"):
        parts.append(_everything_in(vars(obj), seen))
    return "\n".join(parts)


def test_credentials_keep_only_digests_of_keys_and_tokens():
    key, token = "plain-api-key-7d1c", "plain-camera-token-93ab"
    creds = Credentials([key], {"cam-9": token})
    held = _everything_in(creds)
    for secret in (key, token, key.encode().hex(), token.encode().hex()):
        assert secret not in held
    assert creds.api_caller(key) is not None and creds.camera_allowed("cam-9", token)  # still checks them
    settings = ServerSettings(api_keys=key, camera_tokens={"cam-9": token})
    assert key not in repr(settings) and token not in repr(settings) and key not in str(settings)


def test_the_running_servers_credentials_hold_no_plain_key(server):
    held = _everything_in(server.services.credentials)
    assert API_KEY not in held and not any(t in held for t in TOKENS.values())
