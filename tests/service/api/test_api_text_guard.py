"""Text no store can hold (NUL, unpaired surrogates) is a 4xx naming where it is, before any
route runs: on PostgreSQL it used to be a 500. Runs on SQLite and the real PostgreSQL."""
from __future__ import annotations

import datagen as dg
import pytest
from apitools import blob_files, count_rows, upload_leftovers

from service.api.errors import PROBLEM_MEDIA_TYPE
from service.db.models import Dataset, Pool


def _problem(r, status: int, field: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert (body["code"], body["field"]) == ("invalid_text", field), body
    return body


@pytest.mark.parametrize("url, field", [
    ("/v1/datasets/ds_%00x", "path"),
    ("/v1/pools/pool_%ED%A0%80", "path"),  # a UTF-8-encoded surrogate: not valid UTF-8
    ("/v1/jobs?status=%00", "query.status"),
    ("/v1/datasets?after=a%00b", "query.after"),
    ("/v1/jobs?%00=1", "query"),
])
def test_nul_or_bad_utf8_in_the_url_is_400(client, alice, url, field):
    body = _problem(client.get(url, headers=alice.headers), 400, field)
    assert "NUL" in body["detail"] or "UTF-8" in body["detail"]


@pytest.mark.parametrize("payload, field, words", [
    ('{"name": "a\\u0000b", "base_model": "tiny-llava", "model_type": "llava"}', "body.name", "NUL character at offset 1"),
    ('{"name": "p", "base_model": "tiny-llava", "model_type": "llava", "eval_sets": [{"dataset_id": "x", "skill": "\\ud800"}]}',
     "body.eval_sets[0].skill", "unpaired surrogate (U+D800)"),
    ('{"name": "p", "base_model": "tiny-llava", "model_type": "llava", "config": {"lora": {"\\u0000": 1}}}',
     "body.config.lora", "a key contains a NUL"),
])
def test_bad_text_in_a_json_body_is_422_and_nothing_is_written(client, alice, database_url, payload, field, words):
    r = client.post("/v1/pools", content=payload.encode(), headers={**alice.headers, "content-type": "application/json"})
    assert words in _problem(r, 422, field)["detail"]
    assert count_rows(database_url, Pool) == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_that_are_not_finite_are_422(client, alice, database_url, number):
    payload = '{"name": "p", "base_model": "tiny-llava", "model_type": "llava", "config": {"training": {"lr": %s}}}'
    r = client.post("/v1/pools", content=(payload % number).encode(),
                    headers={**alice.headers, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_number", r.text
    assert r.json()["field"] == "body.config.training.lr" and "finite" in r.json()["detail"]
    assert count_rows(database_url, Pool) == 0


def test_good_text_passes_and_malformed_json_is_left_to_validation(client, alice):
    r = client.post("/v1/pools", json={"name": "naïve 🙂 ok", "base_model": "tiny-llava", "model_type": "llava"},
                    headers=alice.headers)
    assert r.status_code == 201, r.text
    r = client.post("/v1/pools", content=b"{not json", headers={**alice.headers, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] != "invalid_text"


def test_oversized_json_body_is_413(client, alice):
    r = client.post("/v1/pools", content=b'{"name": "' + b"x" * (1 << 20) + b'"}',
                    headers={**alice.headers, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def _multipart(name_field: bytes | None, filename: bytes, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand: httpx would percent-encode a NUL in a file name."""
    boundary = b"x7d3boundary"
    parts = []
    if name_field is not None:
        parts.append(b'Content-Disposition: form-data; name="name"\r\n\r\n' + name_field)
    parts.append(b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
                 b"Content-Type: application/octet-stream\r\n\r\n" + content)
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + boundary + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary.decode()}"


@pytest.mark.parametrize("name_field, filename, field", [
    (b"bad\x00name", b"dataset.jsonl", "body.name"),
    (None, b"data\x00set.jsonl", "body.file"),
])
def test_nul_in_an_upload_form_is_422_with_nothing_written(client, alice, database_url, settings, tmp_path,
                                                           name_field, filename, field):
    dataset_file, _ = dg.write_llava_dataset(tmp_path, 2, with_images=False, fmt="jsonl")
    body, content_type = _multipart(name_field, filename, dataset_file.read_bytes())
    r = client.post("/v1/datasets", content=body, headers={**alice.headers, "content-type": content_type})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert "NUL" in r.json()["detail"]
    assert count_rows(database_url, Dataset) == 0 and blob_files(settings) == [] and upload_leftovers(settings) == []


@pytest.mark.parametrize("content_type", ["Application/JSON", "text/plain", "application/merge-patch+json", None])
def test_the_declared_type_cannot_slip_text_past_the_guard(client, alice, database_url, content_type):
    payload = b'{"name": "a\\u0000", "base_model": "tiny-llava", "model_type": "llava"}'
    headers = dict(alice.headers) | ({"content-type": content_type} if content_type else {})
    r = client.post("/v1/pools", content=payload, headers=headers)
    assert r.status_code == 422 and r.json()["code"] == "invalid_text", r.text
    assert count_rows(database_url, Pool) == 0


def test_two_content_type_headers_are_refused(client, alice):
    headers = [*alice.headers.items(), ("content-type", "application/json"), ("content-type", "text/plain")]
    r = client.post("/v1/pools", content=b'{"name": "a\\u0000"}', headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_header"


def test_absurd_content_length_and_deep_nesting_are_4xx(client, alice):
    headers = {**alice.headers, "content-type": "application/json", "content-length": "9" * 5000}
    r = client.post("/v1/pools", content=b"{}", headers=headers)
    assert r.status_code == 413, r.text
    deep = b'{"name": ' + b"[" * 950 + b"]" * 950 + b"}"
    r = client.post("/v1/pools", content=deep, headers={**alice.headers, "content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
