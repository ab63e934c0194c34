"""The embedded broker (service/broker.py): kombu's filesystem transport as hardened there, with
several queues and two consumer processes draining at once: each message reaches exactly one."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.broker import QUEUES, broker_ping, enqueue_job, make_celery
from service.config import Settings

# A consumer process: announces itself, waits until every consumer has (a start barrier, so a
# fast starter cannot drain the queues before the other is up), then drains every queue, holding
# each message for 5 ms of "work" before acking it, until it has seen nothing for 1.5 s. Writes the
# job ids it got (one JSON list) to argv[2]; argv[3] is the barrier directory, argv[4] the count.
CONSUMER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from service.broker import make_celery
    from service.config import Settings

    app = make_celery(Settings(data_dir=Path(sys.argv[1])))
    barrier, parties = Path(sys.argv[3]), int(sys.argv[4])
    got = []
    with app.connection_for_read() as conn:
        queues = [q(conn.default_channel) for q in app.conf.task_queues]
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < parties:
            assert time.monotonic() < deadline, "the other consumer never started"
            time.sleep(0.01)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for q in queues:
                message = q.get(no_ack=False)
                if message is not None:
                    got.append(message.decode()[0][0])
                    time.sleep(0.005)
                    message.ack()
                    idle_since = time.monotonic()
    Path(sys.argv[2]).write_text(json.dumps(got))
    """
)


def test_two_consumer_processes_share_queues_without_duplicates(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sent = [f"job_{i:04d}" for i in range(240)]
    for i, job_id in enumerate(sent):
        assert enqueue_job(settings, job_id, "ingest", QUEUES[i % len(QUEUES)])
    assert broker_ping(settings)

    outs = [tmp_path / f"got-{k}.json" for k in range(2)]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen([sys.executable, "-c", CONSUMER, str(settings.data_dir), str(out), str(barrier), "2"])
        for out in outs
    ]
    for p in procs:
        assert p.wait(120) == 0
    got = [json.loads(out.read_text()) for out in outs]
    received = got[0] + got[1]
    assert sorted(received) == sent  # all delivered, none twice
    assert got[0] and got[1], "both consumers should have taken part"
    leftovers = [p for d in ("queue", "claimed") for p in (settings.broker_dir / d).iterdir()]
    assert leftovers == []


def test_message_names_the_task_and_carries_only_the_job_id(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert enqueue_job(settings, "job_x", "round.features", "gpu")
    with make_celery(settings).connection_for_read() as conn:
        gpu = next(q for q in make_celery(settings).conf.task_queues if q.name == "gpu")
        message = gpu(conn.default_channel).get()
        assert message.headers["task"] == "adaptinf.round.features"
        assert message.decode()[0] == ["job_x"] and message.decode()[1] == {}
        message.ack()
    # A published message appears whole or not at all: no half-written file is ever visible.
    assert not [p for p in (settings.broker_dir / "queue").iterdir() if p.name.startswith(".")]


def test_unknown_queue_is_refused_and_unreachable_redis_is_not_ready(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ValueError, match="nope"):
        enqueue_job(settings, "job_x", "ingest", "nope")
    dead = Settings(data_dir=tmp_path / "data", broker_url="redis://127.0.0.1:1/0")
    assert broker_ping(dead) is False
    assert enqueue_job(dead, "job_x", "ingest", "ingest") is False
