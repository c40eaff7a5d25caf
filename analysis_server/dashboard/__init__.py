"""The operator dashboard: server-rendered pages under ``/ui`` over the same services as the REST API.

Pages are Jinja2 templates; the little JavaScript they need (``static/dashboard.js``, no build
step) calls the REST API with the session cookie and reads ``/events/live`` for the live view.
Login, sessions and CSRF: :mod:`analysis_server.sessions`. See ``README.md`` beside this file.
"""

from __future__ import annotations

from fastapi import FastAPI

from analysis_server.dashboard.pages import (
    STATIC_DIR,
    LoginRequired,
    api_docs,
    login_required_handler,
    router,
)


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages, its static files and its login redirect to ``app``."""
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    app.add_api_route("/", lambda: RedirectResponse("/ui"), include_in_schema=False)
    # The interactive API documentation is a dashboard page (a session, like every page): FastAPI's Swagger UI
    # loads its script from a CDN and runs inline script, which this dashboard's CSP (and a site without
    # Internet access) does not allow.
    app.add_api_route("/docs", api_docs, include_in_schema=False)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.add_exception_handler(LoginRequired, login_required_handler)
