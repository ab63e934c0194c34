"""The job display against the progress contract: the live (terminal) rendering shows the overall
bar and ETA, the stage's done/total, unit and rate, training numbers and recent events; the plain
line carries the same; both fall back when the server sends only done/total."""
from __future__ import annotations

from datetime import datetime, timezone

from rich.console import Console

from service.cli.watch import JobDisplay, plain_line
from service.client import Job, JobEvent

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _job(**extra) -> Job:
    base = {"id": "job_1", "kind": "round", "queue": "select", "parent_id": None, "status": "running",
            "stage": "features", "progress": {"done": 30, "total": 70}, "attempts": 1, "max_attempts": 3,
            "cancel_requested": False, "params": {}, "result": None, "error": None, "created_at": NOW,
            "started_at": NOW, "finished_at": None}
    return Job.model_validate(base | extra)


FULL = {
    "progress": {"done": 30, "total": 70, "unit": "shards", "rate": 2.5, "eta_seconds": 16},
    "overall": {"fraction": 0.4, "eta_seconds": 125, "stages": [
        {"name": "select", "status": "done", "fraction": 1}, {"name": "features", "status": "running", "fraction": 0.43},
        {"name": "train", "status": "pending", "fraction": 0}]},
    "metrics": {"step": 12, "max_steps": 100, "loss": 1.93, "lr": 0.0001},
}


def test_plain_line_with_every_field_and_without():
    line = plain_line(_job(**FULL))
    assert line.startswith("features") and "30/70 shards" in line and "42.9%" in line
    assert "2.5 shards/s" in line and "eta 00:16" in line and "overall 40% eta 02:05" in line
    assert "step 12/100  loss 1.93  lr 0.0001" in line and line.endswith("running")
    bare = plain_line(_job())
    assert "30/70 " in bare and "42.9%" in bare and "eta" not in bare and "overall" not in bare


def _render(display: JobDisplay) -> str:
    console = Console(record=True, width=120, force_terminal=True)
    console.print(display.renderable())
    return console.export_text()


def test_live_display_shows_bars_training_and_events():
    display = JobDisplay(Console(force_terminal=True, width=120))
    display.add_events([
        JobEvent(id=i, job_id="job_1", level="info", message=f"stage {s}", data=d, created_at=NOW)
        for i, (s, d) in enumerate([("select", {"type": "stage.end", "seconds": 4.0}),
                                    ("train", {"type": "train.step", "step": 11, "loss": 2.01})], start=1)
    ])
    display.update(_job(**FULL))
    text = _render(display)
    assert "overall" in text and "40%" in text and "eta 02:05" in text
    assert "features" in text and "30/70 shards" in text and "2.5 shards/s" in text and "eta 00:16" in text
    assert "step 12/100" in text and "loss 1.93" in text and "lr 0.0001" in text
    assert "✓ select" in text and "▶ features" in text and "· train" in text
    assert "stage select (4.0 s)" in text and "train.step: step 11  loss 2.01" in text
    assert display.last_event_id == 2


def test_live_display_falls_back_without_the_new_fields():
    display = JobDisplay(Console(force_terminal=True, width=120))
    display.add_events([JobEvent(id=5, job_id="job_1", level="info", message="step", created_at=NOW,
                                 data={"type": "train.step", "step": 7, "loss": 3.5})])
    display.update(_job())
    text = _render(display)
    assert "30/70" in text and "features" in text
    assert "step 7" in text and "loss 3.5" in text  # the latest train.step event stands in for metrics
    display.update(_job(status="succeeded", stage="finalize", progress={"done": 1, "total": 1}))
    assert "done" in _render(display)
