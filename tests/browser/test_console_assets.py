"""How the console's files are served and shipped: no browser needed."""

from __future__ import annotations

import glob
import posixpath
import re
import tomllib

import httpx
import pytest

from tests.support.agents import PROJECT_ROOT
from tests.support.server import ServerProcess

CONSOLE = PROJECT_ROOT / "app" / "console"
STATIC = CONSOLE / "static"
IMPORT = re.compile(r"""^import .* from "([^"]+)";$""", re.MULTILINE)


def test_package_data_ships_every_static_file() -> None:
    # setuptools expands package-data globs relative to the package (recursively for **): a wheel, and so a
    # non-editable install, has exactly what these patterns match.
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app.console"]
    shipped = {
        path for pattern in patterns for path in glob.glob(pattern, root_dir=CONSOLE, recursive=True)
        if (CONSOLE / path).is_file()
    }  # fmt: skip
    present = {str(path.relative_to(CONSOLE)) for path in STATIC.rglob("*") if path.is_file()}
    assert "static/index.html" in present
    assert present == shipped


@pytest.mark.e2e
def test_the_page_and_its_modules_are_served_with_a_strict_policy(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        bare = client.get("/console")
        assert bare.status_code == 308
        assert bare.headers["location"] == "/console/"
        page = client.get("/console/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "connect-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        # Every module the page loads, and every module they import, is served as JavaScript from here.
        pending = ["js/main.js"]
        seen: set[str] = set()
        while pending:
            module = pending.pop()
            if module in seen:
                continue
            seen.add(module)
            response = client.get(f"/console/{module}")
            assert response.status_code == 200, module
            assert "javascript" in response.headers["content-type"], module
            specs = IMPORT.findall(response.text)
            assert all(spec.startswith(("./", "../")) for spec in specs), specs  # nothing from elsewhere
            pending += [posixpath.normpath(posixpath.join(posixpath.dirname(module), spec)) for spec in specs]
        assert len(seen) == len(list((STATIC / "js").rglob("*.js")))


@pytest.mark.e2e
def test_a_missing_asset_is_a_problem_404_and_no_path_escapes(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        missing = client.get("/console/js/nope.js")
        escape = client.get("/console/..%2f..%2fpyproject.toml")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert escape.status_code == 404
