"""Serves the console's static assets, shipped in this package (``static/``), under ``/console/``.

The console holds no server-side logic: every number it shows comes from the public API with the key the user
signed in with, so nothing here reads the database or needs a key.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

# The page runs with an API key in sessionStorage, so it must run only its own code: no inline script, no
# other origin, never framed. `data:` images are the empty favicon.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (ETag makes that a 304): an upgraded server never runs with stale modules.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def console_root() -> RedirectResponse:
    # The page loads its assets by relative URL, which resolve under /console/ only with the slash.
    return RedirectResponse("/console/", status_code=308)


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install_console(app: FastAPI) -> None:
    app.include_router(router)
    # Read through the package (not a path next to this file), so a wheel install serves the same files.
    app.mount("/console", ConsoleFiles(packages=[("app.console", "static")], html=True), name="console")
