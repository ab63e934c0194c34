"""/metrics and the API documents are public by default; ADAPTINF_PUBLIC_METRICS=false and
ADAPTINF_PUBLIC_DOCS=false put them behind an API key (401 problem+json without one, a revoked
key included), while /healthz, /readyz and /ui stay public. SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.auth import revoke_api_key
from service.db.models import ApiKey
from service.db.session import session_scope
from service.main import create_app

DOCS = ("/docs", "/redoc", "/openapi.json")


def app_client(settings, **update):
    return TestClient(create_app(settings.model_copy(update=update)))


def test_public_by_default(client):
    for path in ("/metrics", *DOCS, "/healthz", "/readyz", "/ui/"):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(("update", "keyed"), [
    ({"public_metrics": False}, ("/metrics",)),
    ({"public_docs": False}, DOCS),
    ({"public_metrics": False, "public_docs": False}, ("/metrics", *DOCS)),
])
def test_keyed_when_not_public(settings, alice, database_url, update, keyed):
    with app_client(settings, **update) as c:
        for path in ("/metrics", *DOCS):
            anonymous = c.get(path)
            if path in keyed:
                assert anonymous.status_code == 401, path
                assert anonymous.headers["content-type"] == "application/problem+json"
                assert anonymous.headers["www-authenticate"] == "Bearer"
                assert anonymous.json()["code"] == "unauthorized" and path in anonymous.json()["detail"]
                assert c.get(path, headers={"Authorization": "Bearer ak_wrong"}).status_code == 401
            else:
                assert anonymous.status_code == 200, path
            assert c.get(path, headers=alice.headers).status_code == 200, path
        for path in ("/healthz", "/readyz", "/ui/"):
            assert c.get(path).status_code == 200, path

        with session_scope(database_url) as session:
            revoke_api_key(session, session.query(ApiKey).filter(ApiKey.owner_id == alice.owner_id).one().id)
        assert c.get(keyed[0], headers=alice.headers).status_code == 401


def test_keyed_behind_a_root_path(settings):
    """Behind a proxy's root path (uvicorn --root-path /api) the gate sees the routed path."""
    app = create_app(settings.model_copy(update={"public_docs": False, "public_metrics": False}))
    with TestClient(app, root_path="/api") as c:  # what the proxy forwards: /api/docs
        for path in ("/metrics", *DOCS):
            assert c.get("/api" + path).status_code == 401, path
        assert c.get("/api/healthz").status_code == 200
