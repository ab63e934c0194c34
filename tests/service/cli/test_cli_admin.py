"""`adaptinf migrate` and `adaptinf keys create|list|revoke`, through service.cli.main."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from service.auth import authenticate
from service.cli import main
from service.config import get_settings
from service.db.session import session_scope


@pytest.fixture
def env_db(empty_database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTINF_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("ADAPTINF_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield empty_database_url
    get_settings.cache_clear()


def _last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_migrate_then_keys_lifecycle(env_db, capsys):
    assert main(["migrate"]) == 0
    engine = create_engine(env_db, poolclass=NullPool)
    assert {"owners", "api_keys", "jobs"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    capsys.readouterr()

    assert main(["keys", "create", "--name", "erin"]) == 0
    key1 = _last_line(capsys.readouterr().out)
    assert key1.startswith("ak_") and len(key1) == 46
    assert main(["keys", "create", "--owner", "erin", "--key-name", "laptop"]) == 0
    key2 = _last_line(capsys.readouterr().out)
    assert main(["keys", "create", "--name", "erin"]) == 1  # the name is taken
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "create", "--owner", "nobody"]) == 1

    with session_scope(env_db) as session:
        assert authenticate(session, key1).name == authenticate(session, key2).name == "erin"

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key1 not in listing and key2 not in listing  # never the secret
    assert f"ak_{key1[3:11]}" in listing and "erin" in listing
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert len(rows) == 2 and all(r[-1] == "-" for r in rows)
    key1_id = next(r[0] for r in rows if r[1] == f"ak_{key1[3:11]}")

    assert main(["keys", "revoke", key1_id]) == 0
    assert main(["keys", "revoke", "key_nope"]) == 1
    with session_scope(env_db) as session:
        assert authenticate(session, key1) is None
        assert authenticate(session, key2) is not None
    capsys.readouterr()
    main(["keys", "list"])
    revoked = [line for line in capsys.readouterr().out.splitlines() if line.startswith(key1_id)]
    assert revoked and revoked[0].split()[-1] != "-"


def test_reap_runs_one_pass_in_a_child_process(env_db, capfd):
    """`adaptinf reap` runs the workers' reaper as `python -m workers.reaper` (the service never
    imports the workers' code): an expired lease is re-queued and named in the output."""
    from datetime import timedelta

    from service.db.models import Job, Owner
    from workers.leases import utcnow

    assert main(["migrate"]) == 0
    with session_scope(env_db) as s:
        owner = Owner(name="ida")
        s.add(owner)
        s.flush()
        job = Job(id="job_lost", owner_id=owner.id, kind="ingest", queue="ingest", status="running", attempts=1,
                  params={}, lease_owner="gone:1:x", lease_expires_at=utcnow() - timedelta(minutes=5))
        s.add(job)
    capfd.readouterr()
    assert main(["reap"]) == 0
    assert "job_lost" in capfd.readouterr().out
    with session_scope(env_db) as s:
        assert s.get(Job, "job_lost").status == "queued"
    assert main(["reap"]) == 0
    assert "nothing to reap" in capfd.readouterr().out
