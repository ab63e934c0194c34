"""Jobs: list, read, events, cancel."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from service.api.deps import OwnerDep, SessionDep, get_owned_or_404
from service.api.errors import ApiProblem
from service.api.openapi import problem_responses
from service.api.pagination import PageDep, paginate
from service.db.models import Job, JobEvent
from service.lifecycle import JobStateError, request_cancel
from service.schemas import JobEventOut, JobOut, ListOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

StatusFilter = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


@router.get("", response_model=ListOut[JobOut])
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    page: PageDep,
    status: Annotated[StatusFilter | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    parent_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """List your jobs, oldest first, optionally filtered by status, kind or parent job."""
    stmt = select(Job).where(Job.owner_id == owner.id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if parent_id is not None:
        stmt = stmt.where(Job.parent_id == parent_id)
    result = paginate(session, stmt, key=(Job.created_at, Job.id), id_column=Job.id, page=page)
    return result.to_dict(JobOut.model_validate)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(404))
def read_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    """A job's status, stage, progress, attempts, error and result."""
    return JobOut.model_validate(get_owned_or_404(session, Job, job_id, owner.id, "job"))


@router.get("/{job_id}/events", response_model=ListOut[JobEventOut], responses=problem_responses(404))
def list_job_events(job_id: str, session: SessionDep, owner: OwnerDep, page: PageDep) -> dict[str, Any]:
    """A job's event log, oldest first."""
    get_owned_or_404(session, Job, job_id, owner.id, "job")
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    result = paginate(session, stmt, key=(JobEvent.id,), id_column=JobEvent.id, page=page, id_type=int)
    return result.to_dict(JobEventOut.model_validate)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problem_responses(
    404, 409, notes={409: "The job has already finished."}))
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one as soon as its worker notices (cancelling)."""
    job = get_owned_or_404(session, Job, job_id, owner.id, "job", for_update=True)
    try:
        request_cancel(session, job)
    except JobStateError as exc:
        raise ApiProblem(409, str(exc), code="job_not_cancellable", job_status=job.status) from None
    session.commit()
    return JobOut.model_validate(job)
