"""Response models read straight from ORM rows (service/schemas.py): derived fields, UTC datetimes,
and the columns they are derived from left out, on SQLite and PostgreSQL."""
from __future__ import annotations

from sqlalchemy import select

from service.auth import create_owner
from service.db.models import Checkpoint, Dataset, EvalResult, Job, Pool, Round, utcnow
from service.db.session import session_scope
from service.jobs import create_job
from service.schemas import CheckpointOut, DatasetCreatedOut, DatasetOut, JobOut, RoundOut, RowWith


def test_job_out_derives_progress_and_overall_and_hides_its_columns(database_url):
    with session_scope(database_url) as session:
        owner_id = create_owner(session, "dora").id
        job = create_job(session, owner_id, "round", "gpu", {"pool_id": "pool_1"}, max_attempts=5)
        d = JobOut.model_validate(job).model_dump(mode="json")
        assert d["progress"] == {"done": 0, "total": 0, "unit": None, "rate": None, "eta_seconds": None}
        assert d["overall"] is None and d["metrics"] is None and d["error"] is None
        assert d["created_at"].endswith("Z") and d["finished_at"] is None
        assert not {k for k in d if k.startswith("progress_")} and "stages" not in d
        job.stages = [{"name": "prepare", "status": "done", "seconds": 1.0},
                      {"name": "features", "status": "running", "started_at": utcnow().isoformat()}]
        job.progress_done, job.progress_total, job.progress_unit = 3, 4, "shards"
        job.status, job.finished_at = "succeeded", utcnow().replace(tzinfo=None)  # naive, as SQLite hands back
        d = JobOut.model_validate(job).model_dump(mode="json")
        assert d["progress"]["done"] == 3 and d["progress"]["unit"] == "shards"
        assert d["overall"]["eta_seconds"] == 0.0 and [s["name"] for s in d["overall"]["stages"]] == ["prepare", "features"]
        assert d["finished_at"].endswith("Z")


def test_dataset_round_and_checkpoint_read_from_rows(database_url):
    with session_scope(database_url) as session:
        owner_id = create_owner(session, "dora").id
        ds = Dataset(owner_id=owner_id, name="d", file_blob="0" * 64, file_name="d.json", skill_counts={"ocr": 2})
        pool = Pool(owner_id=owner_id, name="p", base_model="tiny-llava", model_type="llava", config={})
        session.add_all([ds, pool])
        session.flush()
        created = DatasetCreatedOut.model_validate(RowWith(ds, warnings=[{"code": "c", "message": "m"}]))
        assert created.skills == {"ocr": 2} and created.warnings[0].code == "c"
        assert "skill_counts" not in DatasetOut.model_validate(ds).model_dump()
        rnd = Round(pool_id=pool.id, number=1, params={"dataset_ids": [ds.id], "budget": 4})
        session.add(rnd)
        session.flush()
        job = create_job(session, owner_id, "round", "select", {"round_id": rnd.id})
        job.progress_done, job.progress_total = 2, 8
        rnd.job_id = job.id
        ckpt = Checkpoint(pool_id=pool.id, round_id=rnd.id, blob="a" * 64, size_bytes=10, metrics={"steps": 3})
        session.add(ckpt)
        session.flush()
        session.add(EvalResult(checkpoint_id=ckpt.id, dataset_id=ds.id, skill="ocr", metrics={"accuracy": 0.5, "n": 2}))
        round_id, ckpt_id = rnd.id, ckpt.id
    with session_scope(database_url) as session:
        out = RoundOut.model_validate(session.get(Round, round_id)).model_dump(mode="json")
        assert out["job"] == {"status": "queued", "stage": None, "attempts": 0, "error": None,
                              "progress": {"done": 2, "total": 8, "unit": None, "rate": None, "eta_seconds": None}}
        assert out["params"]["method"] == "adapt-inf" and out["created_at"].endswith("Z")
        c = CheckpointOut.model_validate(session.scalar(select(Checkpoint).where(Checkpoint.id == ckpt_id)))
        d = c.model_dump(mode="json", exclude_unset=True)
        assert (d["object"], d["round_number"], d["sha256"], d["format"]) == ("checkpoint", 1, "a" * 64, "peft-lora-tar-gz")
        assert d["content_url"] == f"/v1/checkpoints/{ckpt_id}/content"
        assert d["eval"] == [{"dataset_id": ds.id, "skill": "ocr", "accuracy": 0.5, "n": 2}]
        assert d["metrics"]["train"] == {"steps": 3} and d["metrics"]["eval"]["ocr"]["accuracy"] == 0.5
        assert not {"blob", "evals", "round", "stored_metrics"} & set(d)
        assert session.get(Job, out["job_id"]) is not None


def test_times_read_in_another_zone_come_out_in_utc():
    """PostgreSQL returns timestamptz in its session's time zone; the API always answers UTC."""
    from datetime import datetime, timedelta, timezone

    from service.schemas import as_utc

    paris = datetime(2026, 11, 30, 19, 0, tzinfo=timezone(timedelta(hours=1)))
    assert as_utc(paris) == datetime(2026, 11, 30, 18, 0, tzinfo=timezone.utc)
    assert as_utc(paris).utcoffset() == timedelta(0)
    assert as_utc(datetime(2026, 11, 30, 18, 0)).tzinfo is timezone.utc  # SQLite's naive UTC
    assert as_utc(None) is None
