"""The documentation a user reads: --help texts and the API's OpenAPI descriptions are plain text
(no reStructuredText markup), and the interactive docs at /docs work without internet access:
the page loads nothing from another host, and every script and stylesheet it names is served by
the API itself (a real `prodplan serve` over HTTP, on the real test server).
"""

from __future__ import annotations

import argparse
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from prodplan_pipeline.cli import _parser

from .api_server import ApiServer, server_env
from .conftest import run_cli

# Double backticks, roles (:class:`X`) and directives (.. note::): what Sphinx renders and a
# terminal or Swagger UI shows as it is.
RST_MARKUP = re.compile(r"``|:[a-z]+:`|^\s*\.\. [a-z-]+::", re.MULTILINE)


@pytest.fixture(scope="module")
def server(databases, tmp_path_factory):
    warehouse = databases.warehouse("api_docs")  # the schema only: the docs need no data
    api = ApiServer(
        server_env(tmp_path_factory.mktemp("api_docs"), warehouse.url.render_as_string(hide_password=False))
    )
    yield api
    api.stop()


def subcommands() -> list[str]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


@pytest.mark.parametrize(
    "command", [[], *([name] for name in subcommands())], ids=lambda command: " ".join(["prodplan", *command])
)
def test_help_is_plain_text(clean_env, command):
    result = run_cli([*command, "--help"], clean_env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: prodplan" in result.stdout
    assert not RST_MARKUP.search(result.stdout), result.stdout


def descriptions(node) -> list[str]:
    """Every description and summary in an OpenAPI document, at any depth."""
    if isinstance(node, list):
        return [text for item in node for text in descriptions(item)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in ("description", "summary") and isinstance(v, str)]
    return found + [text for value in node.values() for text in descriptions(value)]


def test_openapi_descriptions_are_plain_text(server):
    texts = descriptions(server.get("/openapi.json").json())
    assert len(texts) > 20, texts  # the endpoints' docstrings, parameters, models
    assert [t for t in texts if RST_MARKUP.search(t)] == []


class Resources(HTMLParser):
    """The URLs a page loads or links to: (tag, rel, url) for every src= and href=."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("src", "href"):
            if attributes.get(name):
                self.found.append((tag, attributes.get("rel") or "", attributes[name]))


def test_docs_load_only_from_the_api_itself(server):
    page = server.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text, "no other host, anywhere"
    parser = Resources()
    parser.feed(page.text)
    for _, _, url in parser.found:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
    # (tag, rel) -> (content type, at least this many bytes: the real file, not an error page)
    wanted = {
        ("script", ""): ("javascript", 100_000),
        ("link", "stylesheet"): ("text/css", 100_000),
        ("link", "shortcut icon"): ("image/png", 500),
    }
    assert {(tag, rel) for tag, rel, _ in parser.found} == set(wanted)
    bodies = {}
    for tag, rel, url in parser.found:
        response = server.get(url)
        kind, size = wanted[(tag, rel)]
        assert response.status_code == 200, url
        assert kind in response.headers["content-type"] and len(response.content) > size, url
        bodies[tag, rel] = response.content
    # Swagger UI 5: it renders OpenAPI 3.1, which FastAPI writes (the 4.x bundle cannot)
    assert b"SwaggerUIBundle" in bodies["script", ""] and b"oas31" in bodies["script", ""]
    assert "url: '/openapi.json'" in page.text and server.get("/openapi.json").status_code == 200


def test_only_the_pages_files_are_served_and_redoc_is_off(server):
    assert server.get("/docs/assets/index.html").status_code == 404  # upstream's demo page
    assert server.get("/docs/assets/..%2F..%2Fsetup.py").status_code == 404
    assert server.get("/redoc").status_code == 404  # rather than a page blank without a CDN
    paths = server.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")], "the docs are not API endpoints"
