"""BlobResponse: Starlette's FileResponse with Range errors as RFC 9110 and problem+json want them
(a bad Range ignored, 416 as problem+json), and the If-None-Match rule. A 100-byte file behind a
bare FastAPI app with the API's error handlers."""
from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.blob_response import BlobResponse, etag_matches
from service.api.errors import PROBLEM_MEDIA_TYPE, install_error_handlers

DATA = bytes(range(100))
ETAG = '"' + "ab" * 32 + '"'


@pytest.fixture
def client(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    app = FastAPI()
    install_error_handlers(app)

    @app.api_route("/blob", methods=["GET", "HEAD"])
    def blob() -> BlobResponse:
        return BlobResponse(path, media_type="application/gzip", headers={"ETag": ETAG})

    return TestClient(app)


@pytest.mark.parametrize(
    ("header", "span"),  # span: the inclusive bytes a 206 sends
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=99-99", (99, 99)),
        ("bytes=0-" + "9" * 30, (0, 99)),
    ],
)
def test_a_single_range_is_206(client, header, span):
    r = client.get("/blob", headers={"Range": header})
    start, end = span
    assert r.status_code == 206 and r.content == DATA[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/100"
    assert r.headers["content-length"] == str(end - start + 1) and r.headers["etag"] == ETAG


@pytest.mark.parametrize(
    "header",
    [
        None,
        "bytes=5-2",  # last before first: invalid
        "items=0-1",  # an unknown unit MUST be ignored (RFC 9110 §14.2)
        "bytes=-",
        "bytes=" + "9" * 5000 + "-",  # past Python's int() digit limit: ignored, not a 500
    ],
)
def test_no_or_a_bad_range_sends_the_whole_file(client, header):
    r = client.get("/blob", headers={"Range": header} if header else {})
    assert r.status_code == 200 and r.content == DATA, r.text
    assert r.headers["etag"] == ETAG and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == "100" and "content-range" not in r.headers


def test_two_ranges_are_a_multipart_206(client):
    r = client.get("/blob", headers={"Range": "bytes=0-1,4-5"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert b"Content-Range: bytes 0-1/100" in r.content and b"Content-Range: bytes 4-5/100" in r.content


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_range_is_416_problem(client, header):
    r = client.get("/blob", headers={"Range": header})
    assert r.status_code == 416 and r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.headers["content-range"] == "bytes */100"
    assert r.json()["code"] == "range_not_satisfiable" and "100 bytes" in r.json()["detail"]


def test_if_range_and_head(client):
    assert client.get("/blob", headers={"Range": "bytes=5-", "If-Range": ETAG}).status_code == 206
    r = client.get("/blob", headers={"Range": "bytes=5-", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == DATA
    r = client.head("/blob", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == b"" and r.headers["content-length"] == "10"


def test_etag_matches():
    tag = '"abc"'
    assert etag_matches('"abc"', tag) and etag_matches('W/"abc"', tag) and etag_matches('"x", "abc"', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"abcd"', tag) and not etag_matches(None, tag) and not etag_matches("", tag)
