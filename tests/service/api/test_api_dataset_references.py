"""POST /v1/datasets with a JSON body: datasets by reference (file:// and s3:// under the allowed
prefixes), refused outside them, then ingested by the worker."""
from __future__ import annotations

import os

import pytest
from apitools import blob_files, count_rows

import datagen as dg
from service.db.models import Dataset, Job, Sample
from service.db.session import session_scope
from workers import jobs
from workers.tasks.ingest import ingest


@pytest.fixture
def allowed(tmp_path):
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def ref_client(settings, allowed, tmp_path, monkeypatch):
    """A client whose server allows file://<allowed> and s3://<bucket set later> (via env)."""
    from fastapi.testclient import TestClient

    from service.main import create_app

    def make(*prefixes, **updates):
        s = settings.model_copy(update={"ingest_allowed_prefixes": list(prefixes), **updates})
        monkeypatch.setattr(jobs, "get_settings", lambda: s)
        return TestClient(create_app(s))

    return make


def _run_ingest(database_url, dataset_id):
    with session_scope(database_url) as session:
        job_id = session.get(Dataset, dataset_id).job_id
    return ingest(job_id)


def test_file_reference_is_checked_then_ingested(ref_client, alice, allowed, database_url):
    dataset, archive = dg.write_llava_dataset(allowed / "mix", 6, multi_image=True, fmt="jsonl")
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{dataset}", "images_uri": f"file://{archive}",
                                              "skill": "vqa"}, headers=alice.headers)
        assert r.status_code == 202, r.text
        ds = r.json()
        assert (ds["status"], ds["file_name"], ds["archive_name"], ds["name"]) == (
            "pending", f"file://{dataset}", f"file://{archive}", "dataset.jsonl")
        job = client.get(f"/v1/jobs/{ds['job_id']}", headers=alice.headers).json()
        assert job["params"] == {"dataset_id": ds["id"], "reference": True}
        assert _run_ingest(database_url, ds["id"])["status"] == "succeeded"
        done = client.get(f"/v1/datasets/{ds['id']}", headers=alice.headers).json()
    records, images = dg.build_records(6, multi_image=True)
    assert (done["status"], done["num_samples"], done["num_images"]) == ("ready", 6, len(images))
    assert count_rows(database_url, Sample) == 6


@pytest.mark.parametrize("case", ["outside", "dotdot", "symlink", "http", "prefix_lookalike", "none_allowed"])
def test_references_outside_the_allowed_prefixes_are_refused(ref_client, alice, allowed, tmp_path, settings,
                                                             database_url, case):
    secret = tmp_path / "secret.jsonl"
    dg.write_records(secret, dg.build_records(2, with_images=False)[0], "jsonl")
    uri = {"outside": f"file://{secret}", "dotdot": f"file://{allowed}/../secret.jsonl",
           "symlink": f"file://{allowed}/link.jsonl", "http": "http://169.254.169.254/latest/meta-data",
           "prefix_lookalike": f"file://{allowed}x/d.jsonl", "none_allowed": f"file://{allowed}/ok.jsonl"}[case]
    (allowed / "link.jsonl").symlink_to(secret)
    (tmp_path / "allowedx").mkdir()
    dg.write_records(tmp_path / "allowedx" / "d.jsonl", dg.build_records(2, with_images=False)[0], "jsonl")
    dg.write_records(allowed / "ok.jsonl", dg.build_records(2, with_images=False)[0], "jsonl")
    prefixes = [] if case == "none_allowed" else [f"file://{allowed}"]
    with ref_client(*prefixes) as client:
        r = client.post("/v1/datasets", json={"uri": uri}, headers=alice.headers)
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json" and body["field"] == "uri"
    if case == "http":
        assert (r.status_code, body["code"]) == (422, "invalid_uri") and "only s3:// and file://" in body["detail"]
    else:
        assert (r.status_code, body["code"]) == (403, "uri_not_allowed"), body
        assert "ADAPTINF_INGEST_ALLOWED_PREFIXES" in body["detail"]
    assert count_rows(database_url, Dataset) == 0 and count_rows(database_url, Job) == 0 and blob_files(settings) == []


def test_cheap_checks_answer_at_once(ref_client, alice, allowed, database_url):
    (allowed / "d.csv").write_text("a,b\n")
    with ref_client(f"file://{allowed}") as client:
        missing = client.post("/v1/datasets", json={"uri": f"file://{allowed}/nope.json"}, headers=alice.headers)
        csv = client.post("/v1/datasets", json={"uri": f"file://{allowed}/d.csv"}, headers=alice.headers)
        extra = client.post("/v1/datasets", json={"uri": f"file://{allowed}/d.csv", "x": 1}, headers=alice.headers)
    assert (missing.status_code, missing.json()["code"]) == (422, "source_not_found")
    assert (csv.status_code, csv.json()["code"]) == (400, "unsupported_format")
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "body.x"
    assert count_rows(database_url, Dataset) == 0


def test_a_bad_row_found_by_the_worker_fails_the_job_with_its_location(ref_client, alice, allowed, database_url):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, images = dg.build_records(6)
    records[4]["conversations"][0]["from"] = "robot"
    pq.write_table(pa.Table.from_pylist(records), allowed / "d.parquet", row_group_size=4)
    archive = dg.write_zip(allowed, images)
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{allowed}/d.parquet", "images_uri": f"file://{archive}"},
                        headers=alice.headers)
        assert r.status_code == 202 and r.json()["num_samples"] == 0, r.text  # counted by the worker
        assert _run_ingest(database_url, r.json()["id"])["status"] == "failed"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
        job = client.get(f"/v1/jobs/{ds['job_id']}", headers=alice.headers).json()
    assert ds["status"] == "failed" and (ds["error"]["row_group"], ds["error"]["row"]) == (1, 0)
    assert job["error"]["code"] == "unknown_role" and "(row group 1, row 0)" in job["error"]["message"]


def test_s3_reference_against_a_real_endpoint(ref_client, alice, database_url, s3_endpoint, monkeypatch, tmp_path):
    for k, v in s3_endpoint.env().items():
        monkeypatch.setenv(k, v)
    bucket = s3_endpoint.new_bucket()
    s3 = s3_endpoint.client()
    dataset, archive = dg.write_llava_dataset(tmp_path / "src", 4, fmt="json")
    s3.upload_file(str(dataset), bucket, "team/mix/dataset.json")
    s3.upload_file(str(archive), bucket, "team/mix/images.zip")
    s3.put_object(Bucket=bucket, Key="other/secret.json", Body=dataset.read_bytes())
    with ref_client(f"s3://{bucket}/team", s3_endpoint_url=s3_endpoint.url) as client:
        refused = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/other/secret.json"}, headers=alice.headers)
        gone = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/team/none.json"}, headers=alice.headers)
        r = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/team/mix/dataset.json",
                                              "images_uri": f"s3://{bucket}/team/mix/images.zip"},
                        headers=alice.headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "uri_not_allowed")
        assert (gone.status_code, gone.json()["code"]) == (422, "source_not_found")
        assert r.status_code == 202, r.text
        assert _run_ingest(database_url, r.json()["id"])["status"] == "succeeded"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
    assert (ds["status"], ds["num_samples"], ds["num_images"]) == ("ready", 4, 4)


def test_s3_hf_folder_by_reference(ref_client, alice, database_url, s3_endpoint, monkeypatch, tmp_path):
    """A save_to_disk folder under an S3 prefix: the worker downloads its files and reads them."""
    datasets = pytest.importorskip("datasets", reason="datasets is a dev dependency")
    for k, v in s3_endpoint.env().items():
        monkeypatch.setenv(k, v)
    bucket, s3 = s3_endpoint.new_bucket(), s3_endpoint.client()
    records, _ = dg.build_records(3)
    columns = {"id": [r["id"] for r in records], "conversations": [r["conversations"] for r in records],
               "image": [{"bytes": dg.image_bytes(i), "path": f"{i}.png"} for i in range(3)]}
    datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
    for path in (tmp_path / "hf").iterdir():
        s3.upload_file(str(path), bucket, f"hf/vqa/{path.name}")
    with ref_client(f"s3://{bucket}/hf", s3_endpoint_url=s3_endpoint.url) as client:
        wrong = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/hf/vqa/", "format": "parquet"},
                            headers=alice.headers)
        r = client.post("/v1/datasets", json={"uri": f"s3://{bucket}/hf/vqa/"}, headers=alice.headers)
        assert (wrong.status_code, wrong.json()["code"]) == (422, "unsupported_format")
        assert r.status_code == 202, r.text
        assert _run_ingest(database_url, r.json()["id"])["status"] == "succeeded"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
    assert (ds["status"], ds["num_samples"], ds["num_images"], ds["name"]) == ("ready", 3, 3, "vqa")


def test_a_source_rewritten_during_its_copy_fails_the_job(ref_client, alice, allowed, database_url, monkeypatch):
    """The worker copies a file:// source and reads only the copy: a rewrite during the copy is
    caught (size and mtime before and after) rather than writing rows nobody validated."""
    import types

    from service.ingest import local_copy

    dataset = dg.write_records(allowed / "d.jsonl", dg.build_records(4, with_images=False)[0], "jsonl")

    def read_then_rewrite(fd, n):  # the owner rewrites the file after the copy's first read
        chunk = os.read(fd, n)
        if chunk:
            dg.write_records(dataset, dg.build_records(5, with_images=False)[0], "jsonl")
        return chunk

    proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    proxy.read = read_then_rewrite
    monkeypatch.setattr(local_copy, "os", proxy)
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{dataset}"}, headers=alice.headers)
        assert r.status_code == 202, r.text
        assert _run_ingest(database_url, r.json()["id"])["status"] == "failed"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
    assert ds["status"] == "failed" and ds["error"]["code"] == "source_changed"
    assert count_rows(database_url, Sample) == 0


def test_a_source_rewritten_after_its_copy_ingests_the_copy(ref_client, alice, allowed, database_url, monkeypatch):
    from workers.tasks import ingest as task

    dataset = dg.write_records(allowed / "d.jsonl", dg.build_records(4, with_images=False)[0], "jsonl")
    store = task._store_images

    def rewrite_then_store(*args, **kw):
        dg.write_records(dataset, dg.build_records(5, with_images=False)[0], "jsonl")
        return store(*args, **kw)

    monkeypatch.setattr(task, "_store_images", rewrite_then_store)
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{dataset}"}, headers=alice.headers)
        assert _run_ingest(database_url, r.json()["id"])["status"] == "succeeded"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
    assert (ds["status"], ds["num_samples"]) == ("ready", 4) and count_rows(database_url, Sample) == 4


def test_a_link_swapped_in_after_the_apis_check_is_not_followed(ref_client, alice, allowed, tmp_path,
                                                                 database_url, monkeypatch):
    """The API checked a plain file; before the worker reads it, it becomes a link to a secret."""
    from service.ingest import sources

    secret = dg.write_records(tmp_path / "secret.jsonl", dg.build_records(3, with_images=False)[0], "jsonl")
    dataset = dg.write_records(allowed / "d.jsonl", dg.build_records(4, with_images=False)[0], "jsonl")
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{dataset}"}, headers=alice.headers)
        assert r.status_code == 202, r.text
        resolve = sources.resolve_allowed

        def resolve_then_swap(*args, **kw):  # the race: swapped right after the worker's own check
            ref = resolve(*args, **kw)
            dataset.unlink()
            dataset.symlink_to(secret)
            return ref

        from workers.tasks import ingest as task

        monkeypatch.setattr(task, "resolve_allowed", resolve_then_swap)
        assert _run_ingest(database_url, r.json()["id"])["status"] == "failed"
        ds = client.get(f"/v1/datasets/{r.json()['id']}", headers=alice.headers).json()
    assert ds["error"]["code"] == "uri_not_allowed" and "link" in ds["error"]["detail"]
    assert count_rows(database_url, Sample) == 0


@pytest.mark.parametrize("where", ["stat", "open", "images"])
def test_a_path_the_server_may_not_read_is_502_source_unreadable(ref_client, alice, allowed, database_url,
                                                                  monkeypatch, where):
    """Permissions (the tests run as root, so simulated): a problem+json naming the field, not a 500."""
    import builtins
    import pathlib

    dataset, archive = dg.write_llava_dataset(allowed / "mix", 2, fmt="jsonl")
    denied = archive if where == "images" else dataset
    if where == "stat":
        is_dir = pathlib.Path.is_dir

        def no_stat(self):
            if str(self) == str(denied):
                raise PermissionError(13, "Permission denied", str(self))
            return is_dir(self)

        monkeypatch.setattr(pathlib.Path, "is_dir", no_stat)
    else:
        real_open = builtins.open

        def no_open(file, *args, **kw):
            if str(file) == str(denied):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kw)

        monkeypatch.setattr(builtins, "open", no_open)
    with ref_client(f"file://{allowed}") as client:
        r = client.post("/v1/datasets", json={"uri": f"file://{dataset}", "images_uri": f"file://{archive}"},
                        headers=alice.headers)
    field = "images_uri" if where == "images" else "uri"
    assert (r.status_code, r.json()["code"], r.json()["field"]) == (502, "source_unreadable", field), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "Permission denied" in r.json()["detail"]
    assert count_rows(database_url, Dataset) == 0
