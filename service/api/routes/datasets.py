"""Datasets: upload (validated at once, ingested by a worker), list, read, samples, delete."""
from __future__ import annotations

import logging
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import false, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.skills import skill_problem
from core.text import text_problem
from core.statuses import DATASET_PENDING, DATASET_READY
from service.api.deps import BlobsDep, OwnerDep, SessionDep, SettingsDep, get_owned_or_404
from service.api.errors import ApiProblem, disk_full_is_507, ingest_problems
from service.api.openapi import problem_responses
from service.api.idempotency import IdempotencyKeyDep, IdempotentCreate
from service.api.pagination import PageDep, paginate
from service.api.quotas import enforce_quota
from service.api.dataset_references import DatasetReference, create_by_reference, parse_reference
from service.api.uploads import ReceivedForm, receive_multipart
from service.broker import enqueue_job
from service.config import Settings
from service.db.models import Dataset, Sample
from service.jobs import add_event, create_job, note_unsent
from service.owner_quotas import check_new_ingest
from service import datasets as dataset_service
from service.datasets import DatasetInUse
from service.domain_errors import Conflict
from service.schemas import DatasetCreatedOut, DatasetOut, ListOut, RowWith, SampleOut, SkillName
from core.blobs import BlobStore

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
log = logging.getLogger(__name__)

_CREATE_ROUTE = "POST /v1/datasets"
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "a JSON array or JSON Lines of "
                             "LLaVA or OpenAI-style records, a Parquet file (one row per record), or a .zip, .tar "
                             "or .tar.gz of a Hugging Face dataset folder (save_to_disk)"},
                    "images": {"type": "string", "format": "binary", "description": ".zip, .tar or .tar.gz of the "
                               "images the records name by path"},
                    "name": {"type": "string", "maxLength": 200, "description": "default: the file's name"},
                    "skill": {
                        "type": "string", "maxLength": 100,
                        "description": "the skill every sample trains or measures; a record's own 'skill' wins",
                    },
                },
            }
        },
        "application/json": {"schema": DatasetReference.model_json_schema()},
    },
}


def _validate(form: ReceivedForm, workdir: Path, settings: Settings):  # noqa: ANN202
    # Imported here: the ingest library is only needed by the upload routes.
    from service.ingest.limits import limits_for
    from service.ingest.upload_checks import check_upload

    archive = form.files.get("images")
    with ingest_problems():
        # Cheap checks only (records, footers, listings); the worker decodes each image once.
        return check_upload(form.files["file"].path, archive.path if archive else None, workdir,
                            limits_for(settings.max_upload_bytes, settings.max_record_bytes))


def _upload_warnings(validated) -> list[dict[str, str]]:  # noqa: ANN001 - an UploadCheck
    """What the upload is accepted with but may not mean: images placed without an <image> token.

    A warning, not a 4xx: LLaVA's own convention puts a missing token before the first question,
    and datasets in that style omit it on purpose."""
    if not validated.tokens_placed:
        return []
    others = validated.tokens_placed - 1
    who = validated.first_token_placed + (f" and {others} other sample(s)" if others else "")
    return [{"code": "image_token_placed",
             "message": f"{who} {'have' if others else 'has'} more images than <image> tokens in the text: the "
                        "missing tokens were placed before the first user turn (LLaVA's convention); put the "
                        "tokens where the images belong if that is not what you meant"}]


def _form_skill(form: ReceivedForm) -> str | None:
    """The dataset's declared skill (stripped), None when the form gives none."""
    raw = form.fields.get("skill")
    if raw is None or raw == "":
        return None
    if (problem := skill_problem(raw)) is not None:
        raise ApiProblem(422, f"body.skill: the skill {problem}", code="invalid_form",
                         errors=[{"field": "body.skill", "message": problem, "type": "value_error"}])
    return raw.strip()


def _create(
    session: Session,
    owner_id: str,
    settings: Settings,
    blobs: BlobStore,
    form: ReceivedForm,
    workdir: Path,
    idempotency_key: str | None,
) -> Response:
    """Validate, store, commit dataset + job (+ idempotency record) together, then enqueue."""
    file = form.files.get("file")
    if file is None:
        raise ApiProblem(
            422, "body.file: a dataset file is required", code="invalid_form",
            errors=[{"field": "body.file", "message": "field required", "type": "missing"}],
        )
    archive = form.files.get("images")
    if archive is not None and archive.filename == "" and archive.size == 0:
        del form.files["images"]  # an empty file input in an HTML form: no archive
        archive = None
    name = (form.fields.get("name") or "").strip() or file.filename or "dataset"
    for field, text in (("body.file", file.filename), ("body.images", archive and archive.filename), ("body.name", name)):
        if text and (problem := text_problem(text)) is not None:
            raise ApiProblem(422, f"{field}: the {'name' if field == 'body.name' else 'file name'} {problem}",
                             code="invalid_form", errors=[{"field": field, "message": problem, "type": "value_error"}])
    if len(name) > 200:
        raise ApiProblem(422, f"body.name: at most 200 characters, got {len(name)}", code="invalid_form")
    if len(file.filename) > 300 or (archive and len(archive.filename) > 300):
        raise ApiProblem(422, "file names must be at most 300 characters", code="invalid_form")
    skill = _form_skill(form)

    idem = IdempotentCreate(
        session, owner_id, idempotency_key, _CREATE_ROUTE,
        {
            "name": name,
            "skill": skill,
            "file": [file.filename, file.sha256, file.size],
            "images": [archive.filename, archive.sha256, archive.size] if archive else None,
        },
        model=Dataset,
    )
    if (replay := idem.replay()) is not None:
        return replay

    with disk_full_is_507("the upload being checked"):
        validated = _validate(form, workdir / "validate", settings)
    # Checked before the blobs (a refused upload stores nothing) with no lock held: storing them
    # hashes the files, and on SQLite the owner's lock is the database's only write lock.
    enforce_quota(check_new_ingest, session, owner_id, settings, lock=False)
    with disk_full_is_507("the uploaded files, into the blob store"):
        file_ref = blobs.put_file(file.path, move=True)
        archive_ref = blobs.put_file(archive.path, move=True) if archive else None
    # Again under the owner's lock, just before the rows: a twin upload that passed the first check
    # meanwhile is refused here, its blobs left to `adaptinf gc`.
    enforce_quota(check_new_ingest, session, owner_id, settings)
    dataset = Dataset(
        owner_id=owner_id,
        name=name,
        status=DATASET_PENDING,
        num_samples=validated.num_samples,
        num_images=validated.num_images,
        file_blob=file_ref.sha256,
        file_name=file.filename,
        archive_blob=archive_ref.sha256 if archive_ref else None,
        archive_name=archive.filename if archive else None,
        skill=skill,
    )
    session.add(dataset)
    session.flush()
    job = create_job(
        session, owner_id, "ingest", "ingest", {"dataset_id": dataset.id}, max_attempts=settings.max_attempts
    )
    dataset.job_id = job.id
    warnings = _upload_warnings(validated)
    for w in warnings:  # also in the ingest job's events, where `adaptinf jobs watch` shows them
        add_event(session, job.id, w["message"], level="warning", data={"code": w["code"]})
    session.flush()
    body = jsonable_encoder(DatasetCreatedOut.model_validate(RowWith(dataset, warnings=warnings)))
    idem.remember(202, body)
    with disk_full_is_507("the dataset's records, into the database"):
        if (replay := idem.commit()) is not None:
            return replay  # a concurrent request with the same Idempotency-Key committed first

    # After the commit, never before: a worker must find the rows the message points at.
    if not enqueue_job(settings, job.id, "ingest", "ingest"):
        note_unsent(session, job.id)
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/datasets/{dataset.id}"})


@router.post(
    "",
    status_code=202,
    response_model=DatasetCreatedOut,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    summary="Upload a dataset",
    responses=problem_responses(415, notes={
        429: "You have as many unfinished jobs as the server allows per owner.",
        400: "The file or archive cannot be read (encoding, malformed JSON, unknown format, a damaged Parquet "
             "file or dataset folder, corrupt archive).",
        403: "A `uri` or `images_uri` is not under a prefix the server allows (its "
             "ADAPTINF_INGEST_ALLOWED_PREFIXES setting).",
        413: "The file, the archive, a record, a Parquet row group, or the number of samples, members or skills "
             "is over its limit.",
        422: "A record, a column, a form field or a reference is not acceptable, or the referenced source does not "
             "exist; `line`, `row_group` and `row`, `shard`, `sample_id`, `field` or `member` say where. Images are "
             "decoded by the ingest job: a bad image fails the job, with the same details in the dataset's `error`.",
        502: "The referenced S3 source cannot be read with the server's credentials or endpoint.",
    }),
)
async def create_dataset(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    settings: SettingsDep,
    blobs: BlobsDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> Response:
    """Upload a dataset (multipart) or name one by reference (JSON); checked now, ingested by a worker (202)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        body = parse_reference(await request.body())
        return await run_in_threadpool(create_by_reference, session, owner.id, settings, blobs, body,
                                       idempotency_key)
    workdir = settings.work_dir / "uploads" / secrets.token_hex(8)
    try:
        with disk_full_is_507("the uploaded file"):
            workdir.mkdir(parents=True)
            form = await receive_multipart(
                request,
                workdir,
                file_fields={"file", "images"},
                text_fields={"name", "skill"},
                max_file_bytes=settings.max_upload_bytes,
            )
        return await run_in_threadpool(
            _create, session, owner.id, settings, blobs, form, workdir, idempotency_key
        )
    finally:
        await run_in_threadpool(shutil.rmtree, workdir, True)


@router.get("", response_model=ListOut[DatasetOut])
def list_datasets(session: SessionDep, owner: OwnerDep, page: PageDep) -> dict[str, Any]:
    """List your datasets, oldest first."""
    stmt = select(Dataset).where(Dataset.owner_id == owner.id)
    result = paginate(session, stmt, key=(Dataset.created_at, Dataset.id), id_column=Dataset.id, page=page)
    return result.to_dict(DatasetOut.model_validate)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=problem_responses(404))
def read_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> DatasetOut:
    """A dataset's status, counts and error."""
    return DatasetOut.model_validate(get_owned_or_404(session, Dataset, dataset_id, owner.id, "dataset"))


@router.get("/{dataset_id}/samples", response_model=ListOut[SampleOut], responses=problem_responses(404))
def list_samples(dataset_id: str, session: SessionDep, owner: OwnerDep, page: PageDep) -> dict[str, Any]:
    """A dataset's samples in file order (empty until its ingest job has succeeded)."""
    dataset = get_owned_or_404(session, Dataset, dataset_id, owner.id, "dataset")
    # A dataset being ingested may hold some of its rows already (they are committed in chunks):
    # none is shown before all are.
    stmt = select(Sample).where(Sample.dataset_id == dataset_id)
    if dataset.status != DATASET_READY:
        stmt = stmt.where(false())
    result = paginate(session, stmt, key=(Sample.id,), id_column=Sample.id, page=page, id_type=int)
    return result.to_dict(SampleOut.model_validate)


class DatasetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"skill": "counting"}, {"skill": None}]})
    skill: SkillName | None = Field(description="the skill every sample without its own `skill` gets; null clears it")


@router.patch("/{dataset_id}", response_model=DatasetOut, responses=problem_responses(
    404, 409, notes={409: "The dataset is not ready yet."}))
def update_dataset(dataset_id: str, body: DatasetPatch, session: SessionDep, owner: OwnerDep) -> DatasetOut:
    """Declare (or clear) a ready dataset's skill: samples whose record names none take it."""
    dataset = get_owned_or_404(session, Dataset, dataset_id, owner.id, "dataset", for_update=True)
    try:
        dataset_service.set_skill(session, dataset, body.skill)
    except Conflict as exc:
        raise ApiProblem(409, exc.detail, code=exc.code) from None
    session.commit()
    return DatasetOut.model_validate(dataset)


@router.delete("/{dataset_id}", status_code=204, responses=problem_responses(
    404, 409, notes={409: "A pool uses the dataset, or it is still being ingested."}))
def delete_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Delete a dataset and its samples; refused (409) while a pool uses it or it is being ingested."""
    dataset = get_owned_or_404(session, Dataset, dataset_id, owner.id, "dataset")
    try:
        dataset_service.delete_dataset(session, dataset)
    except DatasetInUse as exc:
        raise ApiProblem(409, exc.detail, code=exc.code, pool_ids=exc.pool_ids) from None
    except Conflict as exc:
        raise ApiProblem(409, exc.detail, code=exc.code) from None
    session.commit()
    return Response(status_code=204)
