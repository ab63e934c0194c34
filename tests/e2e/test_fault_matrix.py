"""The fault matrix: every fault the service claims to survive, injected into a real deployment
(PostgreSQL, a redis-server of its own, a prefork Celery worker, the API), one row per fault with
its expected outcome, each checked. `FAULTS` is the table; README's "what survives what" is it in
words. Nothing may be lost or duplicated: a faulted round must end exactly as the unfaulted
reference round did (the same selection rows, hashed; the same pruning decision blob; as many
scores, shards, pool members, checkpoints, index versions and stage jobs).

Kills land deterministically: fault_app.py holds the job at its commit (all work done, nothing
committed) until the test has killed it. Every stage's kill runs in ONE round (six kills, three
of them of the whole worker), so the six rows share its cost.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from apitools import blob_files, upload_leftovers
from disktools import fill
from e2e_procs import wait_for
from fault_procs import ApiProcess, slow_post
from fault_rig import SAMPLES, Rig, assert_like_reference, job_events, rig  # noqa: F401 - rig is a fixture
from index_rows import corrupt_blob
from rounds_fixtures import upload_ready, wait_round, write_dataset
from sqlalchemy import func, select

from core.adapter_archive import adapter_cache_dir
from service.db.models import Checkpoint, Dataset, FeatureShard, IndexVersion, Job, JobEvent, Sample, Selection

pytestmark = [pytest.mark.slow]

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Fault:
    id: str
    fault: str
    expected: str
    check: Callable[[Rig], None]


# ---- SIGKILL at every stage -------------------------------------------------------------------

KILLS = (("prepare", "task process"), ("warmup", "worker"), ("features", "task process"),
         ("select", "worker"), ("train", "task process"), ("finalize", "worker"))


def killed_round(rig: Rig) -> dict[str, Any]:
    """One round whose every stage job is SIGKILLed once at its commit (run once per rig)."""
    def run() -> dict[str, Any]:
        rig.reference  # noqa: B018 - first, unfaulted
        pool_id = rig.new_pool()
        for stage, _ in KILLS:
            rig.gates.arm(f"round.{stage}", "commit")
        r = rig.start_round(pool_id)
        held = {}
        for stage, victim in KILLS:
            held[stage] = rig.gates.wait_held(f"round.{stage}", "commit")
            if victim == "worker":
                rig.kill_worker()
            else:
                rig.kill_task_process(held[stage]["pid"])
        return {"round": wait_round(rig.http, r["id"], 300), "held": held}

    return rig.once("killed", run)


def check_kill(stage: str, victim: str, rig: Rig) -> None:
    killed = killed_round(rig)
    job_id = killed["held"][stage]["job_id"]
    with rig.factory() as s:
        job = s.get(Job, job_id)
        assert (job.kind, job.status, job.attempts) == (f"round.{stage}", "succeeded", 2)
    with rig.factory() as s:
        started = s.execute(select(JobEvent.message, JobEvent.data).where(
            JobEvent.job_id == job_id, JobEvent.message.like("started%")).order_by(JobEvent.id)).all()
    assert [m for m, _ in started] == ["started (attempt 1 of 3)", "started (attempt 2 of 3)"]
    pids = [int(data["owner"].split(":")[1]) for _, data in started]
    assert pids[0] == killed["held"][stage]["pid"] != pids[1]  # the killed process, then another
    assert_like_reference(rig, killed["round"]["id"])


# ---- the broker restarted mid-round -----------------------------------------------------------

def check_broker_restart(rig: Rig) -> None:
    rig.reference  # noqa: B018
    pool_id = rig.new_pool()
    rig.gates.arm("round.features", "start")
    r = rig.start_round(pool_id)
    rig.gates.wait_held("round.features", "start")
    rig.redis.kill()  # every queued message is lost with it (nothing persisted)
    ready = rig.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] == "unreachable", ready.text
    rig.redis.start()
    rig.gates.release("round.features", "start")
    wait_round(rig.http, r["id"], 240)
    assert rig.http.get("/readyz").status_code == 200
    assert_like_reference(rig, r["id"])


# ---- corruption -------------------------------------------------------------------------------

def check_corrupt_shard(rig: Rig) -> None:
    rig.reference  # noqa: B018
    pool_id = rig.new_pool()
    rig.gates.arm("round.select", "start")
    r = rig.start_round(pool_id)
    rig.gates.wait_held("round.select", "start")
    with rig.factory() as s:
        blob = s.get(FeatureShard, (r["id"], 0)).blob
    corrupt_blob(rig.blobs, blob)
    rig.gates.release("round.select", "start")
    wait_round(rig.http, r["id"], 240)
    # shard 0 ran twice, select twice; everything else as in the reference
    assert_like_reference(rig, r["id"], extra_jobs={"round.features": 1, "round.select": 1})
    assert (f"feature shard 0: its blob {blob} is missing or corrupt; computing the shard again"
            in job_events(rig, r["job_id"]))
    with rig.factory() as s:
        assert rig.blobs.verify(s.get(FeatureShard, (r["id"], 0)).blob)


def check_corrupt_index(rig: Rig) -> None:
    ref = rig.reference
    url = f"/v1/pools/{ref['pool_id']}/index?round=1"
    whole = rig.http.get(url)
    assert whole.status_code == 200, whole.text
    with rig.factory() as s:
        version = s.scalars(select(IndexVersion).where(IndexVersion.round_id == ref["round"]["id"])).one()
    assert whole.headers["etag"] == f'"{version.sha256}"' == f'"{hashlib.sha256(whole.content).hexdigest()}"'
    corrupt_blob(rig.blobs, version.blob)
    r = rig.http.get(url)
    assert (r.status_code, r.headers["content-type"]) == (503, PROBLEM), r.text
    problem = r.json()
    assert problem["code"] == "index_rebuilding" and problem["blob"] == version.blob and version.blob in problem["detail"]
    job_url = f"/v1/jobs/{problem['job_id']}"
    wait_for(lambda: rig.http.get(job_url).json()["status"] == "succeeded", 120, "the index rebuild", 0.25)
    again = rig.http.get(url)
    assert again.status_code == 200 and again.content == whole.content  # rebuilt into the very bytes


def check_corrupt_adapter(rig: Rig) -> None:
    ref = rig.reference
    ckpt_id = ref["round"]["result"]["checkpoint_id"]
    with rig.factory() as s:
        blob = s.get(Checkpoint, ckpt_id).blob
        warmup_id = s.scalar(select(Checkpoint.id).where(Checkpoint.round_id == ref["round"]["id"],
                                                         Checkpoint.kind == "warmup"))
    url = f"/v1/checkpoints/{ckpt_id}/content"
    corrupt_blob(rig.blobs, blob)
    r = rig.http.get(url)  # repaired from the workers' adapter cache (this host's data dir)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == blob, r.status_code
    assert r.headers["etag"] == f'"{blob}"' and rig.blobs.verify(blob)
    # no second copy left: the cache wiped too (a new scratch disk, workers on other hosts)
    corrupt_blob(rig.blobs, blob)
    shutil.rmtree(adapter_cache_dir(rig.settings.work_dir, blob))
    r = rig.http.get(url)
    assert (r.status_code, r.headers["content-type"]) == (500, PROBLEM), r.text
    assert r.json()["code"] == "blob_corrupt" and r.json()["blob"] == blob and "newest intact checkpoint" in r.json()["detail"]
    body = rig.run_round(ref["pool_id"], train=False)
    assert body["result"]["continued_from_checkpoint_id"] == warmup_id
    assert body["result"]["damaged_checkpoints"] == [ckpt_id]


def check_corrupt_image(rig: Rig) -> None:
    ref = rig.reference
    with rig.factory() as s:
        selected = s.execute(select(Sample.id, Sample.image_refs).join(Selection, Selection.sample_id == Sample.id)
                             .where(Selection.round_id == ref["round"]["id"]).order_by(Sample.id)).all()
    sample_id, sha = next((i, refs[0]) for i, refs in selected if refs)
    tar_url = f"/v1/rounds/{ref['round']['id']}/selection?format=tar"
    corrupt_blob(rig.blobs, sha)
    r = rig.http.get(tar_url)
    assert (r.status_code, r.headers["content-type"]) == (500, PROBLEM) and r.json()["blob"] == sha, r.text
    failed = rig.run_round(ref["pool_id"], status="failed", train=False)
    error = rig.http.get(f"/v1/jobs/{failed['job_id']}").json()["error"]
    assert error["code"] == "blob_corrupt", error
    assert f"sample {sample_id} of dataset {rig.dataset_id}: its image blob {sha}" in error["message"]
    assert "Upload that dataset again" in error["message"]
    upload_ready(rig.http, rig.tmp / "d-again", SAMPLES)  # the same files again: the blob is whole
    assert rig.blobs.verify(sha)
    assert rig.http.get(tar_url).status_code == 200
    assert rig.run_round(ref["pool_id"], train=False)["status"] == "succeeded"


# ---- the API killed mid-upload ----------------------------------------------------------------

def check_api_kill_mid_upload(rig: Rig) -> None:
    dataset, archive = write_dataset(rig.tmp / "up", list(range(40, 52)))
    request = httpx.Request("POST", "http://x/v1/datasets", data={"name": "cut-off"},
                            files={"file": (dataset.name, dataset.read_bytes()), "images": (archive.name, archive.read_bytes())})
    body = request.read()
    headers = {"Authorization": rig.http.headers["Authorization"], "Idempotency-Key": "fault-matrix-upload",
               "Content-Type": request.headers["content-type"]}

    def datasets_named() -> int:
        with rig.factory() as s:
            return s.scalar(select(func.count()).select_from(Dataset).where(Dataset.name == "cut-off"))

    def bytes_received() -> int:
        return sum(p.stat().st_size for p in upload_leftovers(rig.settings) if p.is_file())

    blobs_before = sorted(blob_files(rig.settings))
    api = ApiProcess(rig.settings, rig.tmp / "api-0.log")
    try:
        api.wait_up()
        sock = slow_post(api.port, "/v1/datasets", headers, body, sent_before_stop=len(body) // 2)
        wait_for(lambda: bytes_received() >= len(body) // 4, 30, "the API writing the upload", 0.05)
        api.kill()
        sock.close()
    finally:
        api.stop()
    # nothing half-written: no dataset row, no blob; only the temp folder of the cut-off body
    assert datasets_named() == 0 and sorted(blob_files(rig.settings)) == blobs_before
    assert upload_leftovers(rig.settings)
    # The restarted API removes upload folders untouched for ADAPTINF_STALE_UPLOAD_SECONDS (at least
    # 300 s): the leftovers are aged by that much rather than the test waiting it out.
    for path in upload_leftovers(rig.settings) + [rig.settings.work_dir / "uploads"]:
        st = path.stat()
        os.utime(path, (st.st_atime - 400, st.st_mtime - 400))
    api = ApiProcess(rig.settings, rig.tmp / "api-1.log", {"ADAPTINF_STALE_UPLOAD_SECONDS": "300"})
    try:
        api.wait_up()
        assert upload_leftovers(rig.settings) == []  # swept at start-up, before the first request
        first = httpx.post(f"{api.base}/v1/datasets", content=body, headers=headers, timeout=60)
        retry = httpx.post(f"{api.base}/v1/datasets", content=body, headers=headers, timeout=60)
    finally:
        api.stop()
    assert first.status_code == 202, first.text
    assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"]
    assert datasets_named() == 1
    wait_for(lambda: rig.http.get(f"/v1/datasets/{first.json()['id']}").json()["status"] == "ready", 90,
             "the retried upload ingested", 0.25)


# ---- a full disk ------------------------------------------------------------------------------

def check_full_disk(rig: Rig) -> None:
    if rig.tmpfs_skip:
        pytest.skip(rig.tmpfs_skip)
    ref = rig.reference
    dataset, _ = write_dataset(rig.tmp / "full", list(range(60, 64)))
    filler = fill(rig.settings.data_dir)
    try:
        r = rig.http.post("/v1/datasets", files={"file": (dataset.name, dataset.read_bytes())})
        assert (r.status_code, r.headers["content-type"]) == (507, PROBLEM), r.text
        assert r.json()["code"] == "insufficient_storage" and "ADAPTINF_DATA_DIR" in r.json()["detail"]
        for path in ("/v1/datasets", f"/v1/pools/{ref['pool_id']}", f"/v1/rounds/{ref['round']['id']}",
                     f"/v1/rounds/{ref['round']['id']}/selection"):
            assert rig.http.get(path).status_code == 200, path
        ready = rig.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["disk"] == "low", ready.text
        # the round's rows go to PostgreSQL, which has room: it is created, and its first stage
        # to write a file fails it with the reason and the way out
        failed = rig.run_round(ref["pool_id"], status="failed", train=False)
        error = rig.http.get(f"/v1/jobs/{failed['job_id']}").json()["error"]
        assert error["code"] == "disk_full" and "ADAPTINF_DATA_DIR" in error["message"], error
        assert str(rig.settings.data_dir) not in error["message"]
        assert upload_leftovers(rig.settings) == [] and [p for p in blob_files(rig.settings) if p.parent.name == "tmp"] == []
    finally:
        filler.unlink()
    assert rig.http.get("/readyz").status_code == 200
    assert rig.run_round(ref["pool_id"], train=False)["status"] == "succeeded"


SAME = ("the round succeeds with the reference round's selection (same sha256 of its ordered rows), the same "
        "pruning decision blob, and as many scores, shards, pool members, checkpoints, index versions and stage jobs")

FAULTS = [
    *(Fault(f"sigkill-{stage}-{victim.replace(' ', '-')}",
            f"SIGKILL of the {victim} running the round's {stage} job, its work done, before its commit",
            "the job runs once more, in another process (attempt 2 of 3), once its lease has expired: sent "
            "again by the reaper, or redelivered by the broker; " + SAME,
            partial(check_kill, stage, victim)) for stage, victim in KILLS),
    Fault("broker-restart", "redis-server SIGKILLed and restarted (nothing persisted) while a shard runs",
          "/readyz says the broker is unreachable meanwhile; lost messages are re-sent by the reaper; " + SAME,
          check_broker_restart),
    Fault("corrupt-shard", "a feature shard blob corrupted after the features stage, before select",
          "select sees the sha256 mismatch and sends the shard back to features, once (one more features and "
          "select job, a warning naming the blob); otherwise " + SAME, check_corrupt_shard),
    Fault("corrupt-index", "the reference round's FAISS index blob corrupted",
          "GET /v1/pools/{id}/index is a 503 problem naming the blob and an index.rebuild job; once the job "
          "succeeds the download is the original bytes", check_corrupt_index),
    Fault("corrupt-adapter", "the pool's current checkpoint blob corrupted, then corrupted again with the "
          "adapter cache wiped", "first: the download repairs it from the adapter cache (200, the original "
          "sha256); then: a 500 problem (blob_corrupt) naming the blob and the way out, and the next round "
          "continues from the newest intact checkpoint (the warm-up), listing the damaged one", check_corrupt_adapter),
    Fault("corrupt-image", "an image blob of a selected sample corrupted",
          "the selection tar is a 500 problem naming the blob; a round over it fails (blob_corrupt) naming the "
          "sample, its dataset, the blob and the way out; uploading the dataset again repairs the blob, and the "
          "tar and the next round work", check_corrupt_image),
    Fault("api-kill-mid-upload", "the API SIGKILLed with half a multipart upload received",
          "no dataset row and no blob; the restarted API removes the cut-off upload's temp folder at start-up; the retry "
          "with the same Idempotency-Key, sent twice, creates exactly one dataset, which is ingested",
          check_api_kill_mid_upload),
    Fault("full-disk", "the data dir's filesystem filled to the last byte",
          "uploads are a 507 problem naming ADAPTINF_DATA_DIR; GETs keep working; /readyz is a 503 with disk "
          "low; a round fails with disk_full and the way out, leaving no temp file; once space is freed /readyz "
          "is ready and the next round succeeds", check_full_disk),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(rig: Rig, fault: Fault) -> None:
    try:
        fault.check(rig)
    except AssertionError as exc:
        raise AssertionError(f"{fault.id} ({fault.fault}): expected {fault.expected}") from exc
    finally:
        rig.gates.clear()  # a case that failed half-way leaves no gate to hold the next one
