"""The Alembic migrations: upgrade, downgrade and re-upgrade on SQLite and PostgreSQL, and no
drift between the migrations and the ORM models."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from service.cli.admin import alembic_config, upgrade_database
from service.db.models import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url):
    url = empty_database_url
    model_tables = set(Base.metadata.tables)
    upgrade_database(url)
    assert _tables(url) == model_tables | {"alembic_version"}
    command.downgrade(alembic_config(url), "base")
    assert _tables(url) == {"alembic_version"}
    upgrade_database(url)
    assert _tables(url) == model_tables | {"alembic_version"}


def test_migrations_match_the_models(database_url):
    """Autogenerate against the migrated database finds nothing to do: no model change lacks a migration."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_script_location_does_not_depend_on_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    upgrade_database(url)  # also creates the missing parent folder
    assert "jobs" in _tables(url)


def _sha(tag: str) -> str:
    import hashlib

    return hashlib.sha256(tag.encode()).hexdigest()


def test_0004_backfills_typed_blob_references_and_goes_back(empty_database_url):
    """Rows written by 0003's code (blob shas only in JSON, an index version with a file path) get
    their round_blobs and index_versions.blob; downgrade gives back a path naming the blob."""
    import json
    from datetime import datetime, timezone

    from sqlalchemy import text

    url = empty_database_url
    command.upgrade(alembic_config(url), "0003")
    now = datetime.now(timezone.utc)
    engine = create_engine(url, poolclass=NullPool)
    state = {"candidates_blob": _sha("plan"), "decision_blob": _sha("decision"), "candidates": 4,
             "warmup_checkpoint": {"blob": _sha("warm"), "size_bytes": 9}, "checkpoint": {"blob": _sha("ckpt")},
             "index": {"path": "/data/indexes/pool_a/pool-index-r000001.faiss", "sha256": _sha("index")}}
    rows = [
        ("owners", {"id": "own_a", "name": "a", "created_at": now}),
        ("pools", {"id": "pool_a", "owner_id": "own_a", "name": "p", "base_model": "tiny-llava", "model_type": "llava",
                   "config": json.dumps({"features": {"proj_dim": 64}, "pool_index": True}), "rounds_completed": 1,
                   "created_at": now}),
        ("rounds", {"id": "round_a", "pool_id": "pool_a", "number": 1, "status": "succeeded", "params": "{}",
                    "job_id": "job_r", "created_at": now}),
        ("rounds", {"id": "round_b", "pool_id": "pool_a", "number": 2, "status": "failed", "params": "{}",
                    "job_id": "job_r2", "created_at": now}),
    ]
    job = {"owner_id": "own_a", "queue": "select", "progress_done": 0, "progress_total": 0, "attempts": 1,
           "max_attempts": 3, "cancel_requested": False, "created_at": now}
    jobs = [
        {"id": "job_r", "kind": "round", "status": "succeeded", "params": {"round_id": "round_a"}, "result": state},
        {"id": "job_s", "kind": "round.select", "status": "succeeded", "parent_id": "job_r", "params": {},
         "result": {"cluster_view_blob": _sha("view"), "selected": 2}},
        # a failed round whose plan only its job named; a job naming no round adds nothing
        {"id": "job_r2", "kind": "round", "status": "failed", "params": {"round_id": "round_b"},
         "result": {"candidates_blob": _sha("plan2"), "decision_blob": "not-a-sha"}},
        {"id": "job_x", "kind": "round", "status": "failed", "params": {"round_id": "round_gone"},
         "result": {"candidates_blob": _sha("orphan")}},
    ]
    with engine.begin() as conn:
        for table, values in rows:
            conn.execute(text(f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})"),
                         values)
        for j in jobs:
            values = {**job, "parent_id": None, **j, "params": json.dumps(j["params"]), "result": json.dumps(j["result"])}
            conn.execute(text(f"INSERT INTO jobs ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})"),
                         values)
        conn.execute(text("INSERT INTO index_versions (id, pool_id, round_id, path, sha256, size_bytes, ntotal, kind, "
                          "created_at) VALUES ('idx_a', 'pool_a', 'round_a', :path, :sha, 10, 3, 'flat', :now)"),
                     {"path": state["index"]["path"], "sha": _sha("index"), "now": now})
    try:
        upgrade_database(url)
        with engine.connect() as conn:
            refs = sorted(conn.execute(text("SELECT round_id, kind, blob FROM round_blobs")).all())
            version = conn.execute(text("SELECT blob, sha256, dim, rebuild_job_id FROM index_versions")).one()
        assert refs == sorted([
            ("round_a", "candidates", _sha("plan")), ("round_a", "decision", _sha("decision")),
            ("round_a", "warmup_adapter", _sha("warm")), ("round_a", "adapter", _sha("ckpt")),
            ("round_a", "cluster_view", _sha("view")), ("round_b", "candidates", _sha("plan2")),
        ])
        assert tuple(version) == (_sha("index"), _sha("index"), 64, None)
        assert "path" not in {c["name"] for c in inspect(engine).get_columns("index_versions")}

        command.downgrade(alembic_config(url), "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT path FROM index_versions")).scalar_one() == f"blob:{_sha('index')}"
        assert "round_blobs" not in set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
