"""Datasets: upload (202 + pending dataset + queued, enqueued job), every rejection with nothing
written, size limits, listing, samples, delete."""
from __future__ import annotations

import json

import pytest
from apitools import blob_files, count_rows, memory_queue, post_dataset, upload_leftovers

import datagen as dg
from service.db.models import Dataset, Job, Pool, PoolEvalSet, PoolMember, Round, Sample, Score, Selection
from service.db.session import session_scope


@pytest.fixture
def ingest_queue():
    """Messages on the in-memory broker's `ingest` queue (kombu's memory transport is per process)."""
    with memory_queue("ingest") as drain:
        yield drain


@pytest.fixture(scope="module")
def llava_files(tmp_path_factory):
    return dg.write_llava_dataset(tmp_path_factory.mktemp("llava"), 6, multi_image=True, text_only=True)


def test_upload_happy_path(client, alice, settings, database_url, llava_files, ingest_queue):
    dataset_file, archive = llava_files
    r = post_dataset(client, alice, dataset_file, archive, name="mix")
    assert r.status_code == 202, r.text
    ds = r.json()
    assert ds["object"] == "dataset" and ds["status"] == "pending" and ds["name"] == "mix"
    assert ds["num_samples"] == 6 and ds["num_images"] > 0 and ds["error"] is None
    assert ds["file_name"] == "dataset.json" and ds["archive_name"] == "images.zip"
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"

    job = client.get(f"/v1/jobs/{ds['job_id']}", headers=alice.headers).json()
    assert (job["kind"], job["queue"], job["status"]) == ("ingest", "ingest", "queued")
    assert job["params"] == {"dataset_id": ds["id"]}

    # The job id (only) went to the ingest queue, after the rows were committed.
    messages = ingest_queue()
    assert len(messages) == 1
    assert messages[0].headers["task"] == "adaptinf.ingest"
    assert messages[0].payload[0] == [ds["job_id"]]

    with session_scope(database_url) as session:
        row = session.get(Dataset, ds["id"])
        store = settings.blob_store()
        assert store.verify(row.file_blob) and store.verify(row.archive_blob)
        assert store.path(row.file_blob).read_bytes() == dataset_file.read_bytes()
        assert store.path(row.archive_blob).read_bytes() == archive.read_bytes()
    assert upload_leftovers(settings) == []
    assert ds.pop("warnings") == []  # only the upload's response carries them
    assert client.get(f"/v1/datasets/{ds['id']}", headers=alice.headers).json() == ds


def test_images_without_an_image_token_are_a_warning(client, alice, tmp_path, ingest_queue):
    photo = dg.real_photos()["china.jpg"]
    records = [dg.llava_record(f"s{i}", "what is it?", "a city", ["x.jpg"]) for i in range(3)]
    for rec in records[1:]:
        rec["conversations"][0]["value"] = "what is it?"  # the image, but no <image> in the text
    r = post_dataset(client, alice, dg.write_records(tmp_path / "d.json", records), dg.write_zip(tmp_path, {"x.jpg": photo}))
    assert r.status_code == 202, r.text
    (warning,) = r.json()["warnings"]
    assert warning["code"] == "image_token_placed"
    assert warning["message"].startswith("sample 's1' (line 16) and 1 other sample(s) have more images than <image> tokens")
    events = client.get(f"/v1/jobs/{r.json()['job_id']}/events", headers=alice.headers).json()["data"]
    warned = [(e["message"], e["data"]) for e in events if e["level"] == "warning"]
    assert warned == [(warning["message"], {"code": "image_token_placed"})]


def test_text_only_jsonl_and_default_name(client, alice, tmp_path, ingest_queue):
    dataset_file, archive = dg.write_llava_dataset(tmp_path, 3, with_images=False, fmt="jsonl", style="openai")
    assert archive is None
    r = post_dataset(client, alice, dataset_file)
    assert r.status_code == 202, r.text
    assert r.json()["name"] == "dataset.jsonl" and r.json()["num_images"] == 0
    assert r.json()["archive_name"] is None
    assert len(ingest_queue()) == 1


def test_skill_form_field_is_stored_and_shown(client, alice, database_url, tmp_path, ingest_queue):
    dataset_file, _ = dg.write_llava_dataset(tmp_path, 2, with_images=False, fmt="jsonl")
    r = client.post("/v1/datasets", files={"file": (dataset_file.name, dataset_file.read_bytes())},
                    data={"skill": "  counting "}, headers=alice.headers)
    assert r.status_code == 202, r.text
    assert r.json()["skill"] == "counting" and r.json()["skills"] is None  # counted at ingest
    with session_scope(database_url) as session:
        assert session.get(Dataset, r.json()["id"]).skill == "counting"


@pytest.mark.parametrize("skill, words", [("x" * 101, "101 characters"), ("   ", "empty"), ("a\tb", "control")])
def test_bad_skill_form_field_is_422_with_nothing_written(client, alice, database_url, settings, tmp_path, skill, words):
    dataset_file, _ = dg.write_llava_dataset(tmp_path, 2, with_images=False, fmt="jsonl")
    r = client.post("/v1/datasets", files={"file": (dataset_file.name, dataset_file.read_bytes())},
                    data={"skill": skill}, headers=alice.headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "invalid_form" and body["detail"].startswith("body.skill") and words in body["detail"]
    assert body["errors"][0]["field"] == "body.skill"
    assert count_rows(database_url, Dataset) == 0 and blob_files(settings) == [] and upload_leftovers(settings) == []


def _records(n=2):
    return dg.build_records(n)


def _bad(tmp_path, case):  # noqa: C901 - one branch per case, kept together for readability
    """(dataset file, archive or None) for each kind of bad upload."""
    recs, imgs = _records()
    good = json.dumps(recs).encode()
    ds = tmp_path / "d.json"
    arc = None
    data = good
    if case == "malformed_json":
        data = b'[{"id": 1,'
    elif case == "bad_encoding":
        data = "\ufeff".encode("utf-16-le") + '[{"id": "a"}]'.encode("utf-16-le")
    elif case == "unsupported_format":
        ds, data = tmp_path / "d.csv", b"a,b\n1,2\n"
    elif case == "invalid_record":
        data = b"[1, 2]"
    elif case == "missing_conversations":
        data = json.dumps([{"id": "a"}]).encode()
    elif case == "unknown_role":
        data = json.dumps([{"id": "a", "conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}]).encode()
    elif case == "missing_assistant_turn":
        data = json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "x"}]}]).encode()
    elif case == "duplicate_sample_id":
        data = json.dumps([dg.llava_record("x", "q", "a"), dg.llava_record("x", "q2", "a2")]).encode()
    elif case == "empty_dataset":
        data = b"[]"
    elif case == "invalid_skill":
        data = json.dumps([dg.llava_record("a", "q", "a") | {"skill": "x" * 101}]).encode()
    elif case == "missing_image/no_archive":
        pass
    elif case == "missing_image/not_in_archive":
        arc = dg.write_zip(tmp_path, {"images/other.png": dg.image_bytes(0)})
    elif case == "corrupt_archive":
        arc = tmp_path / "images.zip"
        arc.write_bytes(b"PK\x03\x04 this is not a zip")
    elif case == "unsupported_archive":
        arc = tmp_path / "images.rar"
        arc.write_bytes(b"Rar!\x1a\x07\x00 junk")
    elif case == "unsafe_archive_member/traversal":
        arc = dg.write_zip(tmp_path, {**imgs, "../evil.png": b"x"})
    elif case == "unsafe_archive_member/symlink":
        arc = dg.write_zip_symlink(tmp_path, link=recs[0]["image"])
    elif case == "unsafe_archive_member/tar_hardlink":
        arc = dg.write_tar_special(tmp_path, name=recs[0]["image"], kind=b"1", members=imgs)
    elif case == "corrupt_image":
        arc = dg.write_zip(tmp_path, {**imgs, recs[0]["image"]: dg.truncated_jpeg()})
    elif case == "image_too_large":
        arc = dg.write_zip(tmp_path, {**imgs, recs[0]["image"]: dg.png_header_only(20000, 20000)})
    else:
        raise AssertionError(case)
    ds.write_bytes(data)
    return ds, arc


BAD_CASES = {
    "malformed_json": 400,
    "bad_encoding": 400,
    "unsupported_format": 400,
    "invalid_record": 422,
    "missing_conversations": 422,
    "unknown_role": 422,
    "missing_assistant_turn": 422,
    "duplicate_sample_id": 422,
    "empty_dataset": 422,
    "invalid_skill": 422,
    "missing_image/no_archive": 422,
    "missing_image/not_in_archive": 422,
    "corrupt_archive": 400,
    "unsupported_archive": 400,
    "unsafe_archive_member/traversal": 422,
    "unsafe_archive_member/symlink": 422,
    "unsafe_archive_member/tar_hardlink": 422,
}
# Moved from the upload to the ingest worker (it decodes each image once; the upload only lists
# the archive): tests/workers/test_tasks_ingest.py checks that the job fails with these codes.
WORKER_CASES = ("corrupt_image", "image_too_large")


@pytest.mark.parametrize("case", WORKER_CASES)
def test_image_content_is_checked_by_the_worker_not_the_upload(client, alice, tmp_path, case, ingest_queue):
    dataset_file, archive = _bad(tmp_path, case)
    r = post_dataset(client, alice, dataset_file, archive)
    assert r.status_code == 202, r.text
    assert (r.json()["num_samples"], r.json()["num_images"]) == (2, 2) and len(ingest_queue()) == 1


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_upload_is_rejected_with_nothing_written(client, alice, settings, database_url, tmp_path, case, ingest_queue):
    dataset_file, archive = _bad(tmp_path, case)
    r = post_dataset(client, alice, dataset_file, archive)
    assert r.status_code == BAD_CASES[case], r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == case.split("/")[0]
    assert body["type"] == f"urn:adaptinf:problem:{body['code']}" and body["detail"]
    if case == "invalid_skill":
        assert (body["line"], body["sample_id"], body["field"]) == (1, "a", "skill") and "101 characters" in body["detail"]
    if case in ("unknown_role", "missing_conversations"):
        assert body["line"] == 1 and body["sample_id"] == "a" and body["field"].startswith("conversations")
    if case.startswith("missing_image"):
        assert body["sample_id"] == "s0000" and body["member"] == "images/0000_0.jpg"
    # Nothing half-written: no rows, no blobs, no temp files, no message.
    assert count_rows(database_url, Dataset) == 0 and count_rows(database_url, Job) == 0
    assert blob_files(settings) == [] and upload_leftovers(settings) == []
    assert ingest_queue() == []


def _multipart(fields: list[tuple[str, str | None, bytes]], boundary="XyZ") -> bytes:
    out = b""
    for name, filename, data in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_upload_over_the_size_limit_is_413(client, alice, settings, database_url):
    limit = settings.max_upload_bytes  # 1 MiB in the test settings
    big = b"[" + b" " * limit + b"]"
    headers = {**alice.headers, "Content-Type": "multipart/form-data; boundary=XyZ"}
    # Streaming check: the file part crosses the limit while being received.
    r = client.post("/v1/datasets", content=_multipart([("file", "d.json", big)]), headers=headers)
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large" and r.json()["limit"] == limit
    # Content-Length check: refused before the body is read.
    huge = _multipart([("file", "d.json", b" " * (2 * limit + 2 * 1024 * 1024))])
    r = client.post("/v1/datasets", content=huge, headers=headers)
    assert r.status_code == 413 and "request body" in r.json()["detail"]
    # Without Content-Length (chunked), the streaming check still applies.
    body = _multipart([("file", "d.json", big)])
    r = client.post("/v1/datasets", content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]), headers=headers)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413
    assert count_rows(database_url, Dataset) == 0 and blob_files(settings) == [] and upload_leftovers(settings) == []


@pytest.mark.parametrize(
    ("parts", "content_type", "status", "field"),
    [
        ([("name", None, b"x")], None, 422, "body.file"),
        ([("file", "d.json", b"[]"), ("extra", None, b"1")], None, 422, "body.extra"),
        ([("file", None, b"[]")], None, 422, "body.file"),
        ([("file", "a.json", b"[]"), ("file", "b.json", b"[]")], None, 422, "body.file"),
        # application/json is a dataset by reference (tests/service/api/test_api_dataset_references.py)
        ([("file", "d.json", b"[]")], "text/plain", 415, None),
    ],
    ids=["no-file", "unknown-field", "file-not-a-file", "file-twice", "not-multipart"],
)
def test_malformed_forms(client, alice, settings, parts, content_type, status, field):
    headers = {**alice.headers, "Content-Type": content_type or "multipart/form-data; boundary=XyZ"}
    r = client.post("/v1/datasets", content=_multipart(parts), headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    if field:
        assert r.json()["errors"][0]["field"] == field
    assert upload_leftovers(settings) == []


def test_truncated_multipart_body_is_422(client, alice, settings):
    body = _multipart([("file", "d.json", b"[]")])[:-10]
    headers = {**alice.headers, "Content-Type": "multipart/form-data; boundary=XyZ"}
    r = client.post("/v1/datasets", content=body, headers=headers)
    assert r.status_code == 422 and "closing boundary" in r.json()["detail"]
    assert upload_leftovers(settings) == []


def _add_samples(database_url, dataset_id, n):
    with session_scope(database_url) as session:
        for i in range(n):
            session.add(
                Sample(
                    dataset_id=dataset_id, position=i, key=f"k{i}", content_hash=f"{i:064x}",
                    record={"id": f"k{i}"}, messages=[{"role": "user", "content": "hi"}],
                    image_refs=[], image_names=[],
                )
            )


def _mark(database_url, job_id, status):
    with session_scope(database_url) as session:
        session.get(Job, job_id).status = status


def test_list_samples_and_delete(client, alice, database_url, tmp_path):
    files = dg.write_llava_dataset(tmp_path, 2, with_images=False)
    ids = [post_dataset(client, alice, files[0], name=f"d{i}").json()["id"] for i in range(3)]
    listing = client.get("/v1/datasets?limit=2", headers=alice.headers).json()
    assert [d["id"] for d in listing["data"]] == ids[:2] and listing["has_more"]

    ds_id = ids[0]
    _add_samples(database_url, ds_id, 5)
    # rows an ingest has committed so far: none is listed before the dataset is ready
    assert client.get(f"/v1/datasets/{ds_id}/samples", headers=alice.headers).json()["data"] == []
    with session_scope(database_url) as session:
        session.get(Dataset, ds_id).status = "ready"
    page = client.get(f"/v1/datasets/{ds_id}/samples?limit=3", headers=alice.headers).json()
    assert [s["key"] for s in page["data"]] == ["k0", "k1", "k2"] and page["has_more"]
    assert set(page["data"][0]) == {"id", "object", "key", "record", "messages", "image_names", "skill"}
    rest = client.get(f"/v1/datasets/{ds_id}/samples?after={page['data'][-1]['id']}", headers=alice.headers).json()
    assert [s["key"] for s in rest["data"]] == ["k3", "k4"] and not rest["has_more"]

    job_id = client.get(f"/v1/datasets/{ds_id}", headers=alice.headers).json()["job_id"]
    r = client.delete(f"/v1/datasets/{ds_id}", headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "ingest_in_progress"
    _mark(database_url, job_id, "succeeded")
    r = client.delete(f"/v1/datasets/{ds_id}", headers=alice.headers)
    assert r.status_code == 204 and r.content == b""
    assert client.get(f"/v1/datasets/{ds_id}", headers=alice.headers).status_code == 404
    with session_scope(database_url) as session:
        assert session.query(Sample).filter_by(dataset_id=ds_id).count() == 0
        assert session.get(Job, job_id) is not None  # the job's history stays


@pytest.mark.parametrize("use", ["member", "eval_set", "selection", "score", "queued_round"])
def test_delete_refused_while_a_pool_uses_the_dataset(client, alice, database_url, tmp_path, use):
    files = dg.write_llava_dataset(tmp_path, 2, with_images=False)
    ds = post_dataset(client, alice, files[0]).json()
    _mark(database_url, ds["job_id"], "succeeded")
    _add_samples(database_url, ds["id"], 2)
    with session_scope(database_url) as session:
        pool = Pool(owner_id=alice.owner_id, name="p", base_model="tiny-llava", model_type="llava", config={})
        session.add(pool)
        session.flush()
        if use == "member":
            sample = session.query(Sample).filter_by(dataset_id=ds["id"]).first()
            session.add(PoolMember(pool_id=pool.id, sample_id=sample.id, joined_round=1))
        elif use == "eval_set":
            session.add(PoolEvalSet(pool_id=pool.id, dataset_id=ds["id"], skill="vqa"))
        else:  # a round's history or plan refers to the dataset (a failed round's rows count too)
            status = "queued" if use == "queued_round" else "failed"
            rnd = Round(pool_id=pool.id, number=1, status=status, params={"dataset_ids": [ds["id"]]})
            session.add(rnd)
            session.flush()
            sample = session.query(Sample).filter_by(dataset_id=ds["id"]).first()
            if use == "selection":
                session.add(Selection(round_id=rnd.id, sample_id=sample.id, cluster=0))
            elif use == "score":
                session.add(Score(round_id=rnd.id, sample_id=sample.id, ppl=1.0))
    r = client.delete(f"/v1/datasets/{ds['id']}", headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "in_use" and r.json()["pool_ids"] == [pool.id]
    # the way out is named: the route that takes the dataset out of that pool
    assert f"DELETE /v1/pools/{pool.id}/datasets/{ds['id']}" in r.json()["detail"]
    assert client.get(f"/v1/datasets/{ds['id']}", headers=alice.headers).status_code == 200
    assert count_rows(database_url, Sample) == 2


def test_patch_declares_a_skill_where_records_name_none(client, alice, bob, database_url, tmp_path):
    files = dg.write_llava_dataset(tmp_path, 2, with_images=False)
    ds_id = post_dataset(client, alice, files[0]).json()["id"]
    url = f"/v1/datasets/{ds_id}"
    r = client.patch(url, json={"skill": "vqa"}, headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "dataset_not_ready"  # still pending: ingest owns it
    _add_samples(database_url, ds_id, 4)
    with session_scope(database_url) as session:
        rows = session.query(Sample).filter_by(dataset_id=ds_id).order_by(Sample.position).all()
        rows[1].record, rows[1].skill = {"id": "k1", "skill": "ocr"}, "ocr"  # a record's own skill
        rows[2].record = {"id": "k2", "skill": None}
        session.get(Dataset, ds_id).status = "ready"

    r = client.patch(url, json={"skill": " vqa "}, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["skill"], r.json()["skills"]) == ("vqa", {"ocr": 1, "vqa": 3})
    samples = client.get(f"{url}/samples", headers=alice.headers).json()["data"]
    assert [s["skill"] for s in samples] == ["vqa", "ocr", "vqa", "vqa"]
    cleared = client.patch(url, json={"skill": None}, headers=alice.headers).json()
    assert (cleared["skill"], cleared["skills"]) == (None, {"ocr": 1})

    for body in ({"skill": "a\tb"}, {"skill": ""}, {"skill": 3}, {"name": "x"}):
        r = client.patch(url, json=body, headers=alice.headers)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", body
    assert client.patch(url, json={"skill": "x"}, headers=bob.headers).status_code == 404
    assert client.get(url, headers=alice.headers).json()["skills"] == {"ocr": 1}  # the refusals changed nothing


def test_a_sample_over_the_record_limit_is_413_and_the_limit_is_a_setting(settings, alice, tmp_path, database_url):
    from fastapi.testclient import TestClient

    from service.main import create_app

    rec = dg.llava_record("long", "q", "a" * 3000)
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(dg.llava_record("ok", "q", "a")) + "\n" + json.dumps(rec) + "\n")
    with TestClient(create_app(settings.model_copy(update={"max_record_bytes": 2000}))) as strict:
        r = post_dataset(strict, alice, path)
        assert r.status_code == 413 and r.json()["code"] == "record_too_large", r.text
        assert "line 2: sample #2 is over the limit of 2000 bytes" in r.json()["detail"]
    assert count_rows(database_url, Dataset) == 0 and blob_files(settings) == []
    with TestClient(create_app(settings)) as default:
        assert post_dataset(default, alice, path).status_code == 202


def test_parquet_upload_gets_its_footer_checked(client, alice, tmp_path, database_url, ingest_queue):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, _ = dg.build_records(5, with_images=False)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet", row_group_size=2)
    r = post_dataset(client, alice, tmp_path / "d.parquet")
    assert r.status_code == 202, r.text
    assert (r.json()["num_samples"], r.json()["file_name"]) == (5, "d.parquet") and len(ingest_queue()) == 1
    table = pa.Table.from_pylist(records).append_column("raw", pa.array([b"x"] * 5, pa.binary()))
    pq.write_table(table, tmp_path / "bad.parquet")
    r = post_dataset(client, alice, tmp_path / "bad.parquet")
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (422, "unsupported_column", "raw")
    assert count_rows(database_url, Dataset) == 1
