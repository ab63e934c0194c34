"""/docs and /redoc load every asset from the API itself: they render on a network with no way out."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app

CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


class _Refs(HTMLParser):
    """Every URL a page makes the browser fetch: src, href, and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


@pytest.fixture
def docs_client(tmp_path):  # noqa: ANN001, ANN201
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", broker_url="memory://")
    with TestClient(create_app(settings)) as c:
        yield c


def _page_urls(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    # Swagger UI is handed its document in a script: `url: '/openapi.json'`
    return parser.urls + re.findall(r"""\burl: ['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_references_only_local_assets_and_each_is_served(docs_client, page):
    response = docs_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.I), "the page names an outside host"
    urls = _page_urls(html)
    assert "/openapi.json" in urls
    assert any(u.endswith(".js") for u in urls)
    for url in urls:
        assert url.startswith("/"), url
        asset = docs_client.get(url)
        assert asset.status_code == 200, url
        expected = CONTENT_TYPES[url[url.rindex("."):]]
        assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 0


def test_swagger_ui_is_the_real_bundle_and_fetches_no_validator_badge(docs_client):
    html = docs_client.get("/docs").text
    assert '"validatorUrl": null' in html  # otherwise Swagger UI loads a badge from swagger.io
    bundle = docs_client.get(next(u for u in _page_urls(html) if u.endswith("swagger-ui-bundle.js")))
    assert "SwaggerUIBundle" in bundle.text and len(bundle.content) > 500_000
    redoc = docs_client.get(next(u for u in _page_urls(docs_client.get("/redoc").text) if u.endswith(".js")))
    assert "Redoc" in redoc.text and len(redoc.content) > 500_000


def test_redoc_bundle_names_no_outside_host(docs_client):
    """ReDoc's bundle hard-codes its footer logo's CDN URL; /redoc loads a copy that points it here."""
    html = docs_client.get("/redoc").text
    bundle_url = next(u for u in _page_urls(html) if u.endswith(".js"))
    bundle = docs_client.get(bundle_url)
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert b"cdn.redoc.ly" not in bundle.content
    assert b"/static-offline-docs/favicon.png" in bundle.content
