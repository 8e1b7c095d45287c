"""`/docs` works offline: the page loads Swagger UI from the server itself, never from a CDN."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def test_the_docs_page_needs_nothing_but_the_server(server: ServerProcess) -> None:
    page = httpx.get(f"{server.base_url}/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(assets) >= 3, page.text  # the script, the stylesheet, the icon
    assert "openapi.json" in page.text
    for asset in assets:
        url = urljoin(f"{server.base_url}/docs", asset)
        assert url.startswith(server.base_url + "/"), f"{asset} is not served by Agentplane"
        response = httpx.get(url)
        assert response.status_code == 200, asset
        assert len(response.content) > 0, asset
    bundle = httpx.get(f"{server.base_url}/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert len(bundle.content) > 500_000
    assert httpx.get(f"{server.base_url}/docs/oauth2-redirect").status_code == 200
    assert httpx.get(f"{server.base_url}/redoc").status_code == 404  # CDN-only: not offered
