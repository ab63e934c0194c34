"""The OpenAPI document: typed responses, problem+json errors, allowed values, examples, clean text."""
from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from core.registry import METHODS
from service.api.errors import PROBLEM_MEDIA_TYPE
from service.config import Settings
from service.main import create_app

DOC = "urn:adaptinf:openapi"
METHODS_HTTP = {"get", "post", "put", "patch", "delete", "head"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict[str, Any]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("openapi")
    return create_app(Settings(data_dir=tmp, database_url=f"sqlite:///{tmp}/x.db", broker_url="memory://")).openapi()


def _operations(spec: dict[str, Any]):  # noqa: ANN202
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS_HTTP:
                yield f"{method.upper()} {path}", op


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for `schema`, its `#/components/...` refs resolved in the served document."""
    registry = Registry().with_resource(DOC, DRAFT202012.create_resource({**spec, "x": schema}))
    return Draft202012Validator({"$ref": DOC + "#/x"}, registry=registry)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_4xx_and_5xx_is_problem_json_with_the_problem_schema(spec):
    for name, op in _operations(spec):
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        for status, response in errors.items():
            assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], (name, status)
            media = response["content"][PROBLEM_MEDIA_TYPE]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, (name, status)
            assert media["example"]["status"] == int(status), (name, status)
            assert response["description"], (name, status)


def test_operations_document_the_problems_their_shape_implies(spec):
    for name, op in _operations(spec):
        statuses = set(op["responses"])
        if "security" in op:
            assert "401" in statuses, name
        if op.get("parameters") or "requestBody" in op:
            assert {"400", "422"} <= statuses, name
        if "requestBody" in op:
            assert "413" in statuses, name
        if "{" in name:  # a path naming one resource can miss it
            assert "404" in statuses, name


@pytest.mark.parametrize(("operation", "statuses"), [
    ("POST /v1/datasets", {"413", "415", "422"}),
    ("POST /v1/pools/{pool_id}/rounds", {"404", "409", "422"}),
    ("DELETE /v1/datasets/{dataset_id}", {"404", "409"}),
    ("GET /v1/checkpoints/{checkpoint_id}/content", {"404", "416"}),
    ("HEAD /v1/checkpoints/{checkpoint_id}/content", {"404", "416"}),
    ("POST /v1/jobs/{job_id}/cancel", {"404", "409"}),
    ("GET /readyz", {"503"}),
])
def test_route_specific_problems_are_documented(spec, operation, statuses):
    method, path = operation.split(" ")
    assert statuses <= set(spec["paths"][path][method.lower()]["responses"])


def test_no_http_validation_error_remains(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]
    assert "HTTPValidationError" not in str(spec)


def test_clusters_and_metrics_responses_are_typed(spec):
    schemas = spec["components"]["schemas"]
    clusters = spec["paths"]["/v1/pools/{pool_id}/clusters"]["get"]["responses"]["200"]["content"]["application/json"]
    out = _resolve(spec, clusters["schema"])
    item = _resolve(spec, out["properties"]["clusters"]["items"])
    assert {"id", "size", "expert", "entropies", "budget", "selected", "pruned"} <= set(item["properties"])
    metrics = spec["paths"]["/v1/pools/{pool_id}/metrics"]["get"]["responses"]["200"]["content"]["application/json"]
    out = _resolve(spec, metrics["schema"])
    for member in ("rounds", "per_skill"):
        assert _resolve(spec, out["properties"][member]["items"])["properties"], member
    assert _resolve(spec, out["properties"]["summary"])["properties"]
    # a round's result and params, a checkpoint's metrics and evals: typed too
    round_out = schemas["RoundOut"]["properties"]
    assert _resolve(spec, round_out["params"])["properties"]["budget"]["anyOf"]
    result = _resolve(spec, round_out["result"]["anyOf"][0])
    assert _resolve(spec, result["properties"]["clusters"]["items"]) is schemas["ClusterOut"]
    ckpt = schemas["CheckpointOut"]["properties"]
    assert _resolve(spec, ckpt["eval"]["items"])["properties"]["accuracy"]
    metrics = _resolve(spec, ckpt["metrics"]["anyOf"][0])["properties"]
    assert _resolve(spec, metrics["train"]["anyOf"][0])["properties"]["mean_loss"]
    assert _resolve(spec, metrics["eval"]["anyOf"][0]["additionalProperties"])["properties"]["accuracy"]


def test_every_json_response_has_a_schema_with_a_type(spec):
    for name, op in _operations(spec):
        for status, response in op["responses"].items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if schema is None or name.startswith("HEAD") or "selection" in name:
                continue  # HEAD has no body; the selection download is a file
            resolved = _resolve(spec, schema)
            assert resolved.get("properties") or resolved.get("type") == "array", (name, status, schema)


def test_method_lists_the_registry_and_budget_has_a_real_type(spec):
    params = spec["components"]["schemas"]["RoundParams"]["properties"]
    assert params["method"]["enum"] == list(METHODS)
    assert {s["type"] for s in params["budget"]["anyOf"]} == {"integer", "number"}
    config = spec["components"]["schemas"]
    assert config["SelectionSection"]["properties"]["n_clusters"]["anyOf"]
    assert config["PruningSection"]["properties"]["preset"]["enum"] == ["default", "lite"]
    assert config["LoraSection"]["properties"]["r"]["type"] == "integer"


def test_no_text_names_a_module_path(spec):
    leaks = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("description", "summary", "title") and isinstance(value, str):
                    if re.search(r"\b(service|workers|core)\.[a-z_]", value):
                        leaks.append((where, value))
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(spec, "")
    assert leaks == []


def test_request_bodies_and_main_responses_carry_examples(spec):
    schemas = spec["components"]["schemas"]
    for name in ("PoolCreate", "RoundParams", "EvalSetIn", "DatasetPatch", "PoolOut", "RoundOut", "DatasetOut",
                 "JobOut", "CheckpointOut", "ClustersOut", "PoolMetricsOut", "Problem"):
        assert schemas[name].get("examples"), name


def test_every_example_matches_its_documented_schema(spec):
    checked = 0
    for name, schema in spec["components"]["schemas"].items():
        for example in schema.get("examples", []):
            errors = [e.message for e in _validator(spec, schema).iter_errors(example)]
            assert errors == [], (name, errors)
            checked += 1
    for name, op in _operations(spec):
        for status, response in op["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if "example" in media and "schema" in media:
                    errors = [e.message for e in _validator(spec, media["schema"]).iter_errors(media["example"])]
                    assert errors == [], (name, status, media_type)
                    checked += 1
    assert checked > 20


def _check_against_documented(spec: dict[str, Any], response, method: str, path: str) -> None:  # noqa: ANN001
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    documented = spec["paths"][path][method]["responses"][str(response.status_code)]
    schema = documented["content"][PROBLEM_MEDIA_TYPE]["schema"]
    assert [e.message for e in _validator(spec, schema).iter_errors(response.json())] == []


def test_a_real_404_and_422_match_the_documented_problem(client, alice):
    spec = client.app.openapi()
    missing = client.get("/v1/pools/pool_missing", headers=alice.headers)
    assert missing.status_code == 404
    _check_against_documented(spec, missing, "get", "/v1/pools/{pool_id}")
    assert missing.json()["code"] == "not_found"

    invalid = client.post("/v1/pools", json={"name": "p", "model_type": "gpt"}, headers=alice.headers)
    assert invalid.status_code == 422
    _check_against_documented(spec, invalid, "post", "/v1/pools")
    fields = {e["field"] for e in invalid.json()["errors"]}
    assert {"body.base_model", "body.model_type"} <= fields

    unauthorized = client.get("/v1/pools/pool_missing")
    assert unauthorized.status_code == 401
    _check_against_documented(spec, unauthorized, "get", "/v1/pools/{pool_id}")


def test_links_lead_from_created_resources_to_their_operations(spec):
    ids = {op["operationId"]: name for name, op in _operations(spec)}
    links = {(name, status, link_name): (ids.get(link["operationId"]), link["parameters"])
             for name, op in _operations(spec) for status, response in op["responses"].items()
             for link_name, link in response.get("links", {}).items()}
    assert links[("POST /v1/pools", "201", "GetPool")] == ("GET /v1/pools/{pool_id}", {"pool_id": "$response.body#/id"})
    assert links[("POST /v1/datasets", "202", "GetIngestJob")] == ("GET /v1/jobs/{job_id}",
                                                                  {"job_id": "$response.body#/job_id"})
    for (name, status, link_name), (target, parameters) in links.items():
        assert target is not None, (name, link_name)  # the operationId names an operation of the document
        body = _resolve(spec, spec["paths"][name.split(" ", 1)[1]][name.split(" ")[0].lower()]["responses"][status]
                        ["content"]["application/json"]["schema"])
        for parameter, where in parameters.items():
            assert "{" + parameter + "}" in target, (link_name, parameter)  # a path parameter of the target
            assert where.removeprefix("$response.body#/") in body["properties"], (name, link_name, where)


def test_every_429_documents_its_retry_after_header(spec):
    found = [(path, method, op["responses"]["429"]) for path, item in spec["paths"].items()
             for method, op in item.items() if "429" in op.get("responses", {})]
    assert found  # the round and upload routes answer 429 over a per-owner cap
    for path, method, response in found:
        assert response.get("headers", {}).get("Retry-After", {}).get("schema", {}).get("type") == "integer", \
            (method, path)
