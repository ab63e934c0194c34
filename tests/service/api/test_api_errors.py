"""Every error is RFC 9457 problem+json: unknown routes, wrong methods, validation, 500s, ApiProblem."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.errors import PROBLEM_MEDIA_TYPE, ApiProblem
from service.main import create_app


def _is_problem(r, status: int) -> dict:
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_unknown_route_is_404_problem(client):
    body = _is_problem(client.get("/v1/nothing-here"), 404)
    assert body["instance"] == "/v1/nothing-here" and "/v1/nothing-here" in body["detail"]


def test_wrong_method_is_405_problem(client, alice):
    body = _is_problem(client.put("/v1/datasets", headers=alice.headers), 405)
    assert "PUT" in body["detail"]


def test_missing_resource_is_404_problem(client, alice):
    body = _is_problem(client.get("/v1/jobs/job_missing", headers=alice.headers), 404)
    assert body["code"] == "not_found" and "job_missing" in body["detail"]
    assert body["type"] == "urn:adaptinf:problem:not_found"


def test_validation_error_names_the_field(client, alice):
    body = _is_problem(client.get("/v1/jobs?limit=1000&status=bogus", headers=alice.headers), 422)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"query.limit", "query.status"}
    assert body["detail"].startswith(("query.limit:", "query.status:")) and "1 more" in body["detail"]


def test_unhandled_error_is_500_problem_without_internals(settings):
    app = create_app(settings)

    def boom():
        raise RuntimeError("secret connection string postgres://u:pw@db")

    def teapot():
        raise ApiProblem(418, "short and stout", code="teapot", title="I'm a teapot", spout="left")

    app.add_api_route("/boom", boom)
    app.add_api_route("/teapot", teapot)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
        body = _is_problem(r, 500)
        assert "secret" not in r.text and "RuntimeError" not in r.text and "Traceback" not in r.text
        assert body["code"] == "internal_error"
        body = _is_problem(c.get("/teapot"), 418)
        assert body == {
            "type": "urn:adaptinf:problem:teapot",
            "title": "I'm a teapot",
            "status": 418,
            "detail": "short and stout",
            "instance": "/teapot",
            "code": "teapot",
            "spout": "left",
        }


def test_an_unreachable_blob_store_is_a_503_problem_with_retry_after(settings, s3_endpoint, monkeypatch, alice, tmp_path):
    """A real route on a real S3 endpoint whose bucket does not exist: the upload cannot be stored."""
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    broken = settings.model_copy(update={"blob_store_url": "s3://bucket-that-was-never-made/b",
                                         "s3_endpoint_url": s3_endpoint.url})
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}\n')
    with TestClient(create_app(broken), raise_server_exceptions=False) as c:
        r = c.post("/v1/datasets", files={"file": ("d.jsonl", data.read_bytes())}, headers=alice.headers)
        body = _is_problem(r, 503)
        assert body["code"] == "blob_store_unavailable" and r.headers["Retry-After"] == "30"
        assert "bucket-that-was-never-made" not in r.text  # the log names the bucket and setting, not the client


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_openapi_schema_builds(client, path):
    r = client.get(path)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/v1/datasets", "/v1/datasets/{dataset_id}/samples", "/v1/jobs/{job_id}/cancel", "/readyz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/datasets"]["post"]["requestBody"]["content"]
