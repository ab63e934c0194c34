"""What the client commands print: JSON (`--json`) or a readable table/summary via rich, on stdout.

Progress and notes go to stderr, so `--json` output stays machine-readable.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from service.cli.watch import clock, metrics_text
from service.client import Checkpoint, Clusters, Dataset, Job, Pool, PoolMetrics, Round


def stdout() -> Console:
    # Not a terminal (a pipe, a file): wide, so ids are never cut to fit 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 240)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def note(msg: str) -> None:
    print(msg, file=sys.stderr)


def show_warnings(obj: BaseModel) -> None:
    """A creating request's `warnings` (accepted, but maybe not meant), one stderr line each."""
    for w in getattr(obj, "warnings", ()):
        note(f"warning: {w.code}: {w.message}")


def print_json(obj: BaseModel | Iterable[BaseModel] | Any) -> None:
    if isinstance(obj, BaseModel):
        value = obj.model_dump(mode="json")
    elif isinstance(obj, (list, tuple)) or hasattr(obj, "__next__"):
        value = [x.model_dump(mode="json") if isinstance(x, BaseModel) else x for x in obj]
    else:
        value = obj
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    t = Table(*columns, title=title, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
    stdout().print(t)


def fields(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
    """A two-column key/value summary."""
    t = Table(show_header=False, box=None, title=title, title_justify="left", pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        if v is not None and v != "":
            t.add_row(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v))
    stdout().print(t)


def _when(dt: Any) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def job_summary(job: Job) -> str:
    """`job job_x (round) succeeded in 01:23; finalize 1/1` and its error, one line."""
    took = f" in {clock(job.duration_seconds)}" if job.duration_seconds is not None else ""
    line = f"job {job.id} ({job.kind}) {job.status}{took}; {job.stage or job.kind} {job.progress.done}/{job.progress.total}"
    if job.progress.unit:
        line += f" {job.progress.unit}"
    if text := metrics_text(job.metrics):
        line += f"; {text}"
    if job.error is not None:
        line += f"; error {job.error.code}: {job.error.message}"
    return line


def show_job(job: Job) -> None:
    fields([("id", job.id), ("kind", job.kind), ("status", job.status), ("stage", job.stage),
            ("progress", f"{job.progress.done}/{job.progress.total} {job.progress.unit or ''}".strip()),
            ("overall", f"{job.overall.fraction * 100:.0f}%" if job.overall else None),
            ("training", metrics_text(job.metrics)), ("attempts", f"{job.attempts}/{job.max_attempts}"),
            ("parent", job.parent_id), ("error", f"{job.error.code}: {job.error.message}" if job.error else None),
            ("created", _when(job.created_at)), ("started", _when(job.started_at)),
            ("finished", _when(job.finished_at)),
            ("duration", clock(job.duration_seconds) if job.duration_seconds is not None else None),
            ("result", job.result)])


def show_dataset(ds: Dataset) -> None:
    fields([("id", ds.id), ("name", ds.name), ("status", ds.status), ("samples", ds.num_samples),
            ("images", ds.num_images), ("file", ds.file_name), ("archive", ds.archive_name), ("skill", ds.skill),
            ("skills", ", ".join(f"{k} {n}" for k, n in (ds.skills or {}).items())), ("error", ds.error),
            ("job", ds.job_id), ("created", _when(ds.created_at))])


def show_pool(pool: Pool) -> None:
    fields([("id", pool.id), ("name", pool.name), ("base model", f"{pool.base_model} ({pool.model_type})"),
            ("size", f"{pool.size} active, {pool.pruned} pruned"), ("rounds", pool.rounds_completed),
            ("checkpoint", pool.current_checkpoint_id),
            ("datasets", ", ".join(f"{d.dataset_id} ({d.active}+{d.pruned} pruned)" for d in pool.datasets)),
            ("eval sets", ", ".join(f"{e.dataset_id}:{e.skill}" for e in pool.eval_sets)),
            ("created", _when(pool.created_at))])


def round_numbers(rnd: Round) -> list[tuple[str, Any]]:
    """The key results of a round: selection, pool size, training loss, evaluation."""
    r = rnd.result
    if r is None:
        return []
    train = r.train
    out = [("selected", f"{r.selected} of {r.candidates} candidates (budget {r.budget})" if r.selected is not None
            else None),
           ("pruned", r.pruned), ("pool size", r.pool_size),
           ("train loss", f"{train.loss_first:.4g} -> {train.loss_last:.4g} in {train.steps} steps"
            if train is not None and train.loss_first is not None and train.loss_last is not None else None),
           ("checkpoint", r.checkpoint_id)]
    for skill, m in r.eval.items():
        out.append((f"eval {skill}", _numbers(m)))
    return out


def _numbers(model: Any) -> str:
    """`name value` for each number of a model (a score, a metrics block), in field order."""
    return "  ".join(f"{k} {_fmt(v)}" for k, v in model.model_dump().items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def show_round(rnd: Round) -> None:
    job = rnd.job
    fields([("id", rnd.id), ("pool", rnd.pool_id), ("number", rnd.number), ("status", rnd.status),
            ("method", rnd.params.method), ("budget", rnd.params.budget),
            ("datasets", ", ".join(rnd.params.dataset_ids)), ("job", rnd.job_id),
            ("stage", f"{job.stage} {job.progress.done}/{job.progress.total}" if job and job.stage else None),
            ("error", f"{job.error.code}: {job.error.message}" if job and job.error else None),
            *round_numbers(rnd), ("created", _when(rnd.created_at)), ("finished", _when(rnd.finished_at))])


def show_checkpoint(ckpt: Checkpoint) -> None:
    train = ckpt.metrics.train if ckpt.metrics else None
    fields([("id", ckpt.id), ("pool", ckpt.pool_id), ("round", ckpt.round_number), ("kind", ckpt.kind),
            ("size", f"{ckpt.size_bytes} bytes"), ("sha256", ckpt.sha256),
            ("train", metrics_text(train.model_dump(exclude_none=True)) if train is not None else None),
            *((f"eval {e.skill}", _numbers(e)) for e in ckpt.eval),
            ("created", _when(ckpt.created_at))])


def show_clusters(c: Clusters) -> None:
    if not c.clusters:
        stdout().print(f"pool {c.pool_id}: no succeeded round yet, so no clusters")
        return
    rows = [cl.model_dump() for cl in c.clusters]
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float, str)) or v is None]
    table(keys, ([_fmt(row[k]) if row[k] is not None else None for k in keys] for row in rows),
          title=f"pool {c.pool_id}, round {c.round_number} ({c.method})")


def show_metrics(m: PoolMetrics) -> None:
    if not m.skills:
        stdout().print(f"pool {m.pool_id}: no evaluation sets, so no metrics (add one: adaptinf pools add-eval-set)")
        return
    table(["round", *m.skills], ([str(r.number), *(_fmt(a) if a is not None else None for a in row)]
                                 for r, row in zip(m.rounds, m.accuracy, strict=False)), title="accuracy")
    table(["skill", "status", "arrived", "final", "forgetting", "backward", "forward"],
          ([k.skill, k.status, k.arrival_round, *(None if v is None else _fmt(v) for v in
            (k.final, k.forgetting, k.backward_transfer, k.forward_transfer))] for k in m.per_skill), title="per skill")
    s = m.summary
    fields([("avg acc", s.avg_acc), ("forgetting", s.forgetting), ("backward transfer", s.backward_transfer),
            ("forward transfer", s.forward_transfer), ("relative gain", s.relative_gain),
            ("skills", f"{s.skills_arrived} arrived, {s.skills_unseen} unseen")], title="summary")
