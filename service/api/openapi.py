"""The OpenAPI document's error responses: every error is problem+json with the `Problem` schema.

A route lists the problems only it sends, in one line: `responses=problem_responses(404, 409)`.
Responses that create or name a resource also carry OpenAPI links to the operations its id leads to.
The ones a route's shape implies are added to every operation when the document is built: 422
(in place of FastAPI's `HTTPValidationError`, which this API never sends) and 400 wherever there
is a parameter or a body, 401 where an API key is required, 408 (a stalled body) and 413 where
there is a body, 507 (a full disk) on every authenticated write.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI

from service.api.errors import PROBLEM_MEDIA_TYPE, ApiProblem, insufficient_storage
from service.schemas import Problem

_REF = "#/components/schemas/"

# Per status: the description an operation gets unless its route gives its own, and an example
# body built by the same ApiProblem the handlers answer with.
_PROBLEMS: dict[int, tuple[str, ApiProblem]] = {
    400: ("The path, query or headers cannot be read (e.g. a NUL character), or `after` is no item of the list.",
          ApiProblem(400, "after: no item with id 'ds_0123' in this list", code="invalid_cursor")),
    401: ("The API key is missing, invalid or revoked.",
          ApiProblem(401, "missing API key: send 'Authorization: Bearer <key>'", code="unauthorized")),
    404: ("No such resource for this API key (another owner's looks the same).",
          ApiProblem(404, "no pool with id 'pool_0123'", code="not_found")),
    408: ("No part of the request body arrived for ADAPTINF_BODY_READ_TIMEOUT_SECONDS; send it again.",
          ApiProblem(408, "no part of the request body arrived for 15 s (ADAPTINF_BODY_READ_TIMEOUT_SECONDS); "
                     "send the request again", code="body_read_timeout")),
    409: ("The request clashes with the resource's current state; `detail` says what to do.",
          ApiProblem(409, "round round_0123 (number 2) of pool pool_0123 is running; one round at a time per "
                     "pool: wait for it or cancel its job job_0123", code="round_in_progress")),
    413: ("The body is larger than its limit.",
          ApiProblem(413, "a request body other than an upload may be at most 1048576 bytes", code="body_too_large")),
    415: ("The body is not of the media type this route reads.",
          ApiProblem(415, "send the upload as multipart/form-data", code="unsupported_media_type")),
    416: ("The requested range lies outside the file; `Content-Range` gives its size.",
          ApiProblem(416, "range 'bytes=900-' is outside the 512 bytes of this file",
                     code="range_not_satisfiable")),
    422: ("A field is missing, of the wrong type, out of range, or names nothing usable; `errors` lists each.",
          ApiProblem(422, "body.budget: Value error, must be an int >= 1 or a fraction in (0, 1], got 0",
                     code="validation_error", errors=[{"field": "body.budget", "type": "value_error",
                                                       "message": "Value error, must be an int >= 1 or a fraction "
                                                                  "in (0, 1], got 0"}])),
    429: ("You have as much work in flight as the server allows per owner; `limit` and `setting` name the cap.",
          ApiProblem(429, "you have 4 rounds queued or running, the most this server allows per owner "
                     "(ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER=4); wait for one to finish or cancel its job",
                     code="quota_exceeded", limit="max_active_rounds_per_owner",
                     setting="ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER", value=4)),
    500: ("The server could not finish the request; the cause is logged.",
          ApiProblem(500, "the server hit an unexpected error; it has been logged", code="internal_error")),
    503: ("A dependency (database, broker) does not answer, or the data directory's disk is nearly full.",
          ApiProblem(503, "not ready: broker unreachable", code="not_ready",
                     checks={"database": "ok", "broker": "unreachable", "disk": "ok"},
                     disk={"free_bytes": 5_368_709_120, "min_free_bytes": 268_435_456})),
    507: ("The server's disk is full; `detail` says what could not be written. Free space and retry.",
          insufficient_storage("the uploaded file")),
}


# Response headers a problem carries, documented with it.
_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": {"description": "Seconds to wait before trying again (a hint: the cap frees "
                          "when one of your jobs ends).", "schema": {"type": "integer", "minimum": 1}}},
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One OpenAPI response: `status` answered as application/problem+json with the Problem schema."""
    default, example = _PROBLEMS.get(status, ("An error.", ApiProblem(status, "what went wrong")))
    response: dict[str, Any] = {
        "description": description or default,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"{_REF}Problem"}, "example": example.body()}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def problem_responses(*statuses: int, notes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the problems it sends beyond those its shape implies.

    `notes` gives a status (listed or not) the route's own reason instead of the generic one.
    """
    notes = notes or {}
    return {status: problem_response(status, notes.get(status)) for status in dict.fromkeys([*statuses, *notes])}


def _implied(operation: dict[str, Any]) -> list[int]:
    """The problems any operation of this shape can answer (see the module docstring)."""
    params = bool(operation.get("parameters")) or "requestBody" in operation
    body = "requestBody" in operation
    return [s for s, applies in ((400, params), (401, "security" in operation), (408, body), (413, body),
                                 (422, params)) if applies]


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") == f"{_REF}HTTPValidationError"


def _restore_nulls(value: Any, schema: dict[str, Any], components: dict[str, Any]) -> None:
    """Put back the nulls of an example: FastAPI drops every None from the document it builds
    (`exclude_none`), so a required nullable member vanished from it."""
    while "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[1], {})
    for branch in schema.get("anyOf", []) + schema.get("allOf", []):
        _restore_nulls(value, branch, components)
    if isinstance(value, dict) and "properties" in schema:
        for name in schema.get("required", []):
            value.setdefault(name, None)
        for name, member in schema["properties"].items():
            if name in value:
                _restore_nulls(value[name], member, components)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _restore_nulls(item, schema["items"], components)


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the implied problems to every operation, the Problem schema, and drop FastAPI's 422 model."""
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            responses = operation.setdefault("responses", {})
            if "422" in responses and _is_fastapi_422(responses["422"]):
                del responses["422"]
            # any write can meet a full disk (SQLite and the blob store live in the data dir)
            writes = method in ("post", "put", "patch", "delete") and "security" in operation
            for status in [*_implied(operation), *([507] if writes else [])]:
                responses.setdefault(str(status), problem_response(status))
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    problem = Problem.model_json_schema(ref_template=_REF + "{model}")
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem
    for component in components.values():
        for example in component.get("examples", []):
            _restore_nulls(example, component, components)
    return schema


# OpenAPI links: what a response's ids lead to (clients and schemathesis' stateful phase follow
# them). (method, path, status) -> link name -> (method, path, {parameter: where in the body}).
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("post", "/v1/pools", "201"): {
        "GetPool": ("get", "/v1/pools/{pool_id}", {"pool_id": "id"}),
        "StartRound": ("post", "/v1/pools/{pool_id}/rounds", {"pool_id": "id"}),
        "DeletePool": ("delete", "/v1/pools/{pool_id}", {"pool_id": "id"}),
    },
    ("post", "/v1/datasets", "202"): {
        "GetDataset": ("get", "/v1/datasets/{dataset_id}", {"dataset_id": "id"}),
        "GetIngestJob": ("get", "/v1/jobs/{job_id}", {"job_id": "job_id"}),
    },
    ("post", "/v1/pools/{pool_id}/rounds", "202"): {
        "GetRound": ("get", "/v1/rounds/{round_id}", {"round_id": "id"}),
        "GetRoundJob": ("get", "/v1/jobs/{job_id}", {"job_id": "job_id"}),
        "CancelRound": ("post", "/v1/jobs/{job_id}/cancel", {"job_id": "job_id"}),
    },
    ("get", "/v1/rounds/{round_id}", "200"): {
        "GetSelection": ("get", "/v1/rounds/{round_id}/selection", {"round_id": "id"}),
    },
    ("get", "/v1/checkpoints/{checkpoint_id}", "200"): {
        "DownloadCheckpoint": ("get", "/v1/checkpoints/{checkpoint_id}/content", {"checkpoint_id": "id"}),
    },
}


def document_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Add `_LINKS` to the responses they start from, naming each target by its operationId."""
    paths = schema.get("paths", {})
    for (method, path, status), links in _LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            name: {"operationId": paths[to_path][to_method]["operationId"],
                   "parameters": {param: f"$response.body#/{member}" for param, member in params.items()}}
            for name, (to_method, to_path, params) in links.items()
        }
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json, /docs, /redoc) serve the document with its problems."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_links(document_problems(build()))  # FastAPI keeps build()'s result in app.openapi_schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
