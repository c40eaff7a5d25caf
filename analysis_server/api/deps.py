"""FastAPI dependencies: the services object and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from analysis_server.services import Services
from analysis_server.sessions import COOKIE, CSRF_HEADER, SAFE_METHODS, csrf_ok, fetch_site_ok


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="a REST API key")
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <REST API key>")


async def require_caller(
    request: Request,
    services: ServicesDep,
    x_api_key: Annotated[str | None, Security(api_key_scheme)] = None,
    authorization: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
) -> str:
    """The caller's audit name; 401 without a valid API key (or dashboard session cookie).

    A request with no key at all may come from the dashboard: its session cookie names the key
    it was opened with (:mod:`analysis_server.sessions`); with the cookie, a request from another
    origin (``Sec-Fetch-Site``) gets 403, and anything but a read needs the session's CSRF token
    too (403 without it).
    """
    presented = x_api_key or (authorization.credentials if authorization else None)
    caller = services.credentials.api_caller(presented)
    if caller is None and not presented and COOKIE in request.cookies:
        session = await services.sessions.get(request.cookies[COOKIE])
        if session is not None:
            if not fetch_site_ok(request.headers):
                raise HTTPException(403, "the dashboard's session works only from the dashboard's own pages "
                                         f"(this request came from Sec-Fetch-Site: "
                                         f"{request.headers.get('sec-fetch-site', '')[:32]})")
            if request.method not in SAFE_METHODS and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
                raise HTTPException(403, f"a dashboard request that changes something needs the {CSRF_HEADER} "
                                         "header of its session")
            caller = session.caller
    if caller is None:
        services.metrics.auth_failures.labels("rest").inc()
        raise HTTPException(401, "missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    return caller


Caller = Annotated[str, Depends(require_caller)]
