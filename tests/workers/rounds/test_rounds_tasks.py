"""The round tasks' edges: a parent cancelled while queued, a stage job the reaper gives up on."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from service.db.models import Job, Round
from service.lifecycle import request_cancel
from tests.workers.rounds.rounds_helpers import RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401


def test_parent_cancelled_while_queued_cancels_the_round(round_env: RoundEnv) -> None:
    env = round_env
    ds = add_dataset(env, "a", list(range(4)))
    round_id, job_id = start_round(env, add_pool(env), [ds], budget=2)
    with env.factory() as s:
        request_cancel(s, s.get(Job, job_id))  # the API's cancel of a queued job ends it at once
        s.commit()
    env.drain()
    with env.factory() as s:
        assert (s.get(Job, job_id).status, s.get(Round, round_id).status) == ("cancelled", "cancelled")
        assert s.scalars(select(Job).where(Job.parent_id == job_id)).all() == []
    assert env.sent == []


def test_stage_lost_max_attempts_times_fails_the_round(round_env: RoundEnv) -> None:
    import workers.tasks.rounds  # noqa: F401 - registers the failure hooks, as every worker does
    from workers.leases import utcnow
    from workers.reaper import reap_expired

    env = round_env
    ds = add_dataset(env, "a", list(range(4)))
    round_id, job_id = start_round(env, add_pool(env), [ds], budget=2)
    env.drain(until_kind="round.prepare")
    (prepare_id, _), = env.sent
    with env.factory() as s:  # as if its worker died on the last allowed attempt
        child = s.get(Job, prepare_id)
        child.status, child.attempts, child.lease_owner = "running", child.max_attempts, "gone:1:x"
        child.lease_expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
        assert prepare_id in reap_expired(s, env.settings)
    with env.factory() as s:
        parent, rnd = s.get(Job, job_id), s.get(Round, round_id)
        assert (s.get(Job, prepare_id).status, parent.status, rnd.status) == ("failed", "failed", "failed")
        assert parent.error["code"] == "lease_expired" and parent.error["job_id"] == prepare_id
        assert parent.error["message"].startswith("round.prepare failed after 3 attempt(s): worker lost 3 times")
