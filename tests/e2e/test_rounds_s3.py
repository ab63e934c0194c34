"""A full round with every blob in S3: `adaptinf serve` (SQLite, the filesystem broker, one
embedded worker; no Redis) with ADAPTINF_BLOB_STORE=s3://<bucket>/blobs on a real S3 endpoint
(moto's server). The uploads, images, feature shards, plans, checkpoint and decision go to the
bucket; the data directory keeps only its cache of them and no blob store of its own."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from e2e_procs import ADAPTINF, REPO
from rounds_fixtures import create_pool, jsonl, start_round, tar_members, upload_ready, wait_round

pytestmark = [pytest.mark.slow]


def test_embedded_serve_runs_a_round_with_blobs_in_s3(tmp_path: Path, s3_endpoint) -> None:
    from test_e2e_serve import Served, free_port

    bucket = s3_endpoint.new_bucket()
    env = {**s3_endpoint.env(), "ADAPTINF_BLOB_STORE": f"s3://{bucket}/blobs"}
    data = tmp_path / "data"
    served = Served(data, free_port(), env=env)
    try:
        served.wait_up()
        assert f"blobs in s3://{bucket}/blobs;" in served.text
        key = next(line.split("=", 1)[1] for line in served.lines if line.startswith("ADAPTINF_API_KEY="))
        with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            assert api.get("/readyz").json()["checks"]["blob_store"] == "ok"
            ds = upload_ready(api, tmp_path / "d", list(range(0, 16)))
            pool = create_pool(api, pool_index=True)
            r = start_round(api, pool["id"], [ds], budget=5)
            body = wait_round(api, r["id"], 240)
            assert body["result"]["selected"] == 5 and body["result"]["checkpoint_id"]
            assert len(jsonl(api.get(f"/v1/rounds/{r['id']}/selection").content)) == 5
            # The tar streams the selected images out of the bucket.
            members = tar_members(api.get(f"/v1/rounds/{r['id']}/selection", params={"format": "tar"}).content)
            images = [m for m in members if m != "selection.jsonl"]
            assert images and all(len(members[m]) > 0 for m in images)
            url = f"/v1/checkpoints/{body['result']['checkpoint_id']}/content"
            content = api.get(url)
            assert content.status_code == 200
            sha = hashlib.sha256(content.content).hexdigest()
            assert content.headers["etag"] == f'"{sha}"'
            assert api.get(url, headers={"Range": "bytes=0-9"}).content == content.content[:10]
            # The pool's FAISS index version is a blob in the bucket too, served verified.
            index = api.get(f"/v1/pools/{pool['id']}/index")
            assert index.status_code == 200, index.text
            index_sha = hashlib.sha256(index.content).hexdigest()
            assert index.headers["etag"] == f'"{index_sha}"' and int(index.headers["x-index-rows"]) > 0
        assert served.terminate() == 0, served.text[-3000:]
    finally:
        if served.proc.poll() is None:
            served.proc.kill()

    keys = [o["Key"] for page in s3_endpoint.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert f"blobs/{sha[:2]}/{sha[2:4]}/{sha}" in keys  # the checkpoint
    assert f"blobs/{index_sha[:2]}/{index_sha[2:4]}/{index_sha}" in keys  # the index version
    assert len(keys) > len(images) + 2  # dataset file, archive, images, shards, plan, decision...
    blob_dir = data / "blobs"
    assert not blob_dir.exists() or not [p for p in blob_dir.rglob("*") if p.is_file()]
    # `adaptinf gc` lists the bucket and deletes from it what no row refers to (the round's
    # consumed stage blobs at most), keeping every referenced blob: the checkpoint among them.
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")} | env
    gc = subprocess.run([str(ADAPTINF), "gc", "--grace-hours", "0", "--delete"], cwd=REPO, capture_output=True,
                        text=True, env=run_env | {"ADAPTINF_DATA_DIR": str(data)}, timeout=120)
    assert gc.returncode == 0, gc.stderr
    scanned, referenced = re.match(r"^(\d+) blobs, (\d+) referenced; deleted: ", gc.stdout).groups()
    assert int(scanned) == len(keys) and int(referenced) > len(images)
    left = [o["Key"] for o in s3_endpoint.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(left) == int(referenced) and f"blobs/{sha[:2]}/{sha[2:4]}/{sha}" in left
    assert f"blobs/{index_sha[:2]}/{index_sha[2:4]}/{index_sha}" in left
