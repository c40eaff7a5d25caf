"""What every HTTP request passes before a route sees it: failed-login throttling, body size, content type.

A pure ASGI middleware (streaming responses pass through untouched):

- a 401 answered to a request that presented a credential (``X-API-Key``, ``Authorization``, or
  the dashboard's login form) counts one failure of its client (:func:`analysis_server.auth.client_bucket`
  of ``request.client.host``: the connecting address, or with ``FACESERVER_TRUSTED_PROXIES`` the one
  a trusted proxy names in ``X-Forwarded-For``); a client over the limit gets, for its wrong
  credentials only, 429 with ``Retry-After`` after a delay instead of 401. A valid credential is
  never refused or delayed (see :class:`analysis_server.auth.FailureLimiter`);
- a body larger than ``max_body`` gets 413, from ``Content-Length`` before anything is read or
  while a chunked body is read;
- a body of any media type but JSON, multipart form data or a URL-encoded form gets 415.
"""

from __future__ import annotations

import json
import math

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analysis_server.auth import FailureLimiter, client_bucket

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MEDIA_TYPES = frozenset({"application/json", "multipart/form-data", "application/x-www-form-urlencoded"})
LOGIN_PATH = "/ui/login"


class TooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Throttling of wrong credentials, 413 for large bodies, 415 for other media types."""

    def __init__(self, app: ASGIApp, limiter: FailureLimiter, max_body: int):
        self.app = app
        self.limiter = limiter
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        client = scope.get("client")
        address = client_bucket(client[0]) if client else "unknown"
        headers = Headers(scope=scope)
        if method in BODY_METHODS:
            refusal = self._check_body(headers)
            if refusal is not None:
                await _answer(send, *refusal)
                return
        credential = "x-api-key" in headers or "authorization" in headers or (path == LOGIN_PATH and method == "POST")
        started = False
        replaced = False  # a throttled 401 went out as 429: the route's own body is dropped
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise TooLarge(self.max_body)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 401 and credential and self.limiter.failed(address):
                    replaced = True
                    await self.limiter.hold(address)
                    wait = max(1, math.ceil(self.limiter.retry_after(address)))
                    await _answer(send, 429, "too many failed authentication attempts from this address; "
                                             "wrong credentials are refused slowly for a while (valid ones "
                                             "are not affected)", {"Retry-After": str(wait)})
                    return
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except TooLarge as e:  # raised where nothing turned it into a response
            if started:
                raise
            await _answer(send, e.status_code, e.detail)

    def _check_body(self, headers: Headers) -> tuple[int, str] | None:
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return 400, "Content-Length is not a number"
            if int(length) > self.max_body:
                return 413, f"the request body is larger than {self.max_body} bytes"
            if int(length) == 0:
                return None
        elif "transfer-encoding" not in headers:
            return None
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in MEDIA_TYPES:
            return 415, (f"unsupported content type {media or '(none)'!r}: send application/json "
                         "(multipart/form-data for image uploads)")
        return None
