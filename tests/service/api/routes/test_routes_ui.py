"""The dashboard's static files: served without a key, plotly.js from the installed package (no CDN)."""
from __future__ import annotations

import re

from service.api.routes.ui import UI_DIR, plotly_js


def test_ui_redirects_to_its_page_and_serves_it_without_a_key(client) -> None:  # noqa: ANN001
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == (UI_DIR / "index.html").read_text()


def test_every_asset_the_page_names_is_local_and_served(client) -> None:  # noqa: ANN001
    page = client.get("/ui/").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/ui/vendor/plotly.min.js" in assets and "/ui/static/app.js" in assets
    for url in assets:
        if url.startswith(("data:", "#")):  # inline icon, in-page link
            continue
        assert url.startswith("/ui/"), f"{url}: the dashboard must work without internet access"
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 100, url


def test_plotly_is_the_packaged_bundle(client) -> None:  # noqa: ANN001
    r = client.get("/ui/vendor/plotly.min.js")
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == plotly_js().read_bytes() and b"plotly.js" in r.content[:2000]


def test_the_data_routes_stay_behind_the_key(client) -> None:  # noqa: ANN001
    assert client.get("/v1/rounds/round_x/map").status_code == 401
    assert client.get("/v1/rounds/round_x/score-histograms").status_code == 401
    assert client.get("/ui/static/nope.js").status_code == 404
