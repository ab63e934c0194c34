"""Following a job: a live multi-line display on a terminal (rich Live + Progress), one plain line
per change elsewhere (a log file, a pipe, a test).

What it shows, each part only when the server reports it (older servers send just done/total):
the overall bar with its ETA, the current stage's bar with done/total, unit, rate and ETA, the
latest training step/loss/lr, and the last few job events.
"""
from __future__ import annotations

import collections
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn
from rich.text import Text

from service.client import Client, Job, JobEvent

EVENTS_SHOWN = 5
BAR_WIDTH = 30


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def metrics_text(metrics: dict[str, Any] | None) -> str:
    """`step 12/100  loss 1.93  lr 0.0001` (and any other numbers), "" when there are none."""
    if not metrics:
        return ""
    parts, m = [], dict(metrics)
    if "step" in m:
        step, total = m.pop("step"), m.pop("max_steps", None)
        parts.append(f"step {step}/{total}" if total else f"step {step}")
    parts += [f"{k} {_num(v)}" for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return "  ".join(parts)


def event_text(event: JobEvent) -> str:
    data = event.data or {}
    if event.type == "stage.end" and data.get("seconds") is not None:
        return f"{event.message} ({data['seconds']:.1f} s)" if isinstance(data["seconds"], (int, float)) else event.message
    if event.type in ("train.step", "eval"):
        numbers = metrics_text({k: v for k, v in data.items() if k != "type"})
        return f"{event.type}: {numbers}" if numbers else event.message
    return event.message


def _stage_name(job: Job) -> str:
    return job.stage or job.kind


def _fraction(job: Job) -> float:
    done, total = job.progress.done, job.progress.total
    if total:
        return min(1.0, done / total)
    return 1.0 if job.status == "succeeded" else 0.0


def plain_line(job: Job) -> str:
    """One line: stage [####....] done/total unit pct% rate eta | overall | training | status."""
    p, frac = job.progress, _fraction(job)
    filled = int(frac * BAR_WIDTH)
    unit = f" {p.unit}" if p.unit else ""
    line = f"{_stage_name(job):<12} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {p.done}/{p.total}{unit} {frac * 100:5.1f}%"
    if p.rate is not None:
        line += f"  {p.rate:.3g} {p.unit or 'units'}/s"
    if p.eta_seconds is not None:
        line += f"  eta {clock(p.eta_seconds)}"
    if job.overall is not None:
        line += f" | overall {job.overall.fraction * 100:.0f}%"
        if job.overall.eta_seconds is not None:
            line += f" eta {clock(job.overall.eta_seconds)}"
    if text := metrics_text(job.metrics):
        line += f" | {text}"
    return f"{line}  {job.status}"


class _EtaColumn(ProgressColumn):
    """The server's ETA (task field `eta`) when it sends one, else rich's own estimate."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        if eta is None and not task.finished:
            eta = task.time_remaining
        return Text(f"eta {clock(eta)}" if not task.finished else "done", style="progress.remaining")


class JobDisplay:
    """The state of one watched job and its two renderings."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.events: collections.deque[JobEvent] = collections.deque(maxlen=EVENTS_SHOWN)
        self.last_event_id: int | None = None
        self.train: dict[str, Any] | None = None  # the latest train.step numbers, if the job has no metrics
        self.overall = Progress(TextColumn("[bold]{task.description:<12}"), BarColumn(), TaskProgressColumn(),
                                _EtaColumn(), console=console)
        self.stage = Progress(TextColumn("{task.description:<12}"), BarColumn(),
                              TextColumn("{task.completed:.0f}/{task.total:.0f} {task.fields[unit]}"),
                              TextColumn("{task.fields[rate]}"), _EtaColumn(), console=console)
        self._overall_task = self.overall.add_task("overall", total=None, eta=None)
        self._stage_task = self.stage.add_task("", total=None, unit="", rate="", eta=None)
        self._stage_seen: str | None = None
        self.job: Job | None = None

    def add_events(self, events: list[JobEvent]) -> list[JobEvent]:
        for event in events:
            self.events.append(event)
            self.last_event_id = event.id
            if event.type == "train.step":
                self.train = {k: v for k, v in (event.data or {}).items() if k != "type"}
        return events

    def update(self, job: Job) -> None:
        p = job.progress
        if _stage_name(job) != self._stage_seen:  # a new stage: a fresh bar, so rich's rate restarts
            self.stage.reset(self._stage_task)
            self._stage_seen = _stage_name(job)
        rate = f"{p.rate:.3g} {p.unit or 'units'}/s" if p.rate is not None else ""
        self.stage.update(self._stage_task, description=_stage_name(job), completed=p.done,
                          total=max(p.total, p.done, 1) if p.total or job.status == "succeeded" else None,
                          unit=p.unit or "", rate=rate, eta=p.eta_seconds)
        if job.overall is not None:
            self.overall.update(self._overall_task, completed=job.overall.fraction * 100, total=100,
                                eta=job.overall.eta_seconds)
        elif job.status == "succeeded":
            self.overall.update(self._overall_task, completed=100, total=100)
        self.job = job

    def renderable(self) -> RenderableType:
        job = self.job
        parts: list[RenderableType] = [Text(f"job {job.id} ({job.kind}): {job.status}", style="bold")]
        if job.overall is not None and job.overall.stages:
            marks = {"done": "✓", "running": "▶", "pending": "·"}
            parts.append(Text("  ".join(f"{marks.get(s.status, '?')} {s.name}" for s in job.overall.stages)))
        parts += [self.overall, self.stage]
        if text := metrics_text(job.metrics or self.train):
            parts.append(Text(f"train  {text}", style="cyan"))
        for event in self.events:
            parts.append(Text(f"  {event.created_at:%H:%M:%S} {event_text(event)}", style="dim"))
        return Group(*parts)


def watch(client: Client, job_id: str, console: Console, *, interval: float = 1.0) -> Job:
    """Follow a job to its end on `console` (stderr in the CLI); return its final state."""
    display = JobDisplay(console)

    def poll_events() -> list[JobEvent]:
        return display.add_events(list(client.jobs.events(job_id, after=display.last_event_id)))

    if not console.is_terminal:
        last: str | None = None

        def print_changes(job: Job) -> None:
            nonlocal last
            for event in poll_events():
                console.print(f"  event: {event_text(event)}", highlight=False, markup=False, soft_wrap=True)
            line = plain_line(job)
            if line != last:  # a log gets a line per change, not one per poll
                console.print(line, highlight=False, markup=False, soft_wrap=True)
                last = line

        return client.jobs.wait(job_id, on_update=print_changes, interval=interval)

    with Live(console=console, refresh_per_second=4, transient=False) as live:
        def redraw(job: Job) -> None:
            poll_events()
            display.update(job)
            live.update(display.renderable())

        return client.jobs.wait(job_id, on_update=redraw, interval=interval)
