"""POST /v1/datasets with a JSON body: a dataset read from an s3:// or file:// URI under a prefix
the operator allows. The API does the cheap checks (prefix, existence, size, format); the ingest
worker reads and validates the records and decodes each image once."""
from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any, Literal

from fastapi import Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from core.blobs import BlobStore
from service.api.errors import ApiProblem, ingest_problems
from service.api.idempotency import IdempotentCreate
from service.api.quotas import enforce_quota
from service.broker import enqueue_job
from service.config import Settings
from service.db.models import Dataset
from service.jobs import create_job, note_unsent
from service.owner_quotas import check_new_ingest
from service.schemas import DatasetCreatedOut, RowWith, SkillName

MAX_BODY_BYTES = 64 * 1024


class DatasetReference(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"uri": "s3://datasets/llava/mix.parquet", "name": "llava-mix"},
        {"uri": "file:///data/llava/train.jsonl", "images_uri": "file:///data/llava/images.tar"},
        {"uri": "s3://datasets/hf/vqa-train/", "format": "hf"},
    ]})
    uri: str = Field(max_length=2048, description="s3://bucket/key or file:///path of the dataset: a JSON or "
                     "JSONL file, a Parquet file, or a Hugging Face save_to_disk folder (or a .zip/.tar of it)")
    images_uri: str | None = Field(None, max_length=2048, description="s3:// or file:// URI of the images "
                                   "archive (.zip, .tar or .tar.gz) the records' image paths point into")
    name: str | None = Field(None, max_length=200, description="default: the URI's last segment")
    format: Literal["json", "jsonl", "parquet", "hf"] | None = Field(
        None, description="default: sniffed from the first bytes (a folder is a Hugging Face dataset)")
    skill: SkillName | None = Field(None, description="the skill every sample trains or measures; a record's own "
                                    "'skill' wins")


def parse_reference(raw: bytes) -> DatasetReference:
    """The JSON body as a DatasetReference; 413 / 422 problems otherwise."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiProblem(413, f"the request body is larger than the limit of {MAX_BODY_BYTES} bytes",
                         code="upload_too_large", limit=MAX_BODY_BYTES)
    try:
        return DatasetReference.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def check_reference(body: DatasetReference, settings: Settings) -> dict[str, Any]:
    """Cheap checks; the manifest the worker reads: {uri, images_uri, format}."""
    from service.ingest.limits import limits_for
    from service.ingest.sources import local_io, parse_prefixes, read_head, resolve_allowed, source_size
    from service.ingest.upload_checks import check_source, check_source_archive, sniff_head

    limits = limits_for(settings.max_upload_bytes, settings.max_record_bytes)
    prefixes = parse_prefixes(settings.ingest_allowed_prefixes)
    endpoint = settings.s3_endpoint_url
    with ingest_problems():
        ref = resolve_allowed(body.uri, prefixes, "uri")
        images = resolve_allowed(body.images_uri, prefixes, "images_uri") if body.images_uri else None
        size, is_dir = source_size(ref, "uri", endpoint)
        fmt = body.format
        if is_dir:
            if fmt not in (None, "hf"):
                raise ApiProblem(422, f"uri: {ref.url} is a folder, which only a Hugging Face dataset (format "
                                 f"'hf') can be; format {fmt!r} was given", code="unsupported_format", field="uri")
            fmt = "hf"
        elif size > settings.max_upload_bytes:
            raise ApiProblem(413, f"uri: {ref.url} is {size} bytes, over the limit of {settings.max_upload_bytes}",
                             code="upload_too_large", limit=settings.max_upload_bytes, field="uri")
        if images is not None:
            image_size, image_dir = source_size(images, "images_uri", endpoint)
            if image_dir or image_size > settings.max_upload_bytes:
                raise ApiProblem(422 if image_dir else 413, f"images_uri: {images.url} must be one archive file "
                                 f"(.zip, .tar, .tar.gz) of at most {settings.max_upload_bytes} bytes",
                                 code="invalid_uri" if image_dir else "upload_too_large", field="images_uri")
        if ref.scheme == "file":  # local: the reader's own cheap checks (a Parquet footer, an HF schema)
            local_images = images if images and images.scheme == "file" else None
            with local_io(ref, "uri"):
                fmt = check_source(Path(ref.key), None, limits, fmt)
            if local_images is not None:
                with local_io(local_images, "images_uri"):
                    check_source_archive(Path(local_images.key), limits)
        elif not is_dir:
            fmt = fmt or sniff_head(read_head(ref, "uri", endpoint))
    return {"uri": ref.url, "images_uri": images.url if images else None, "format": fmt}


def reference_name(body: DatasetReference, manifest: dict[str, Any]) -> str:
    return (body.name or "").strip() or posixpath.basename(manifest["uri"].rstrip("/")) or "dataset"


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True).encode()


def create_by_reference(session: Session, owner_id: str, settings: Settings, blobs: BlobStore,
                        body: DatasetReference, idempotency_key: str | None) -> Response:
    """Cheap checks, then the dataset + ingest job, as an upload's. The dataset's file blob is a
    small manifest naming the source ({uri, images_uri, format}); the job's params say so."""
    idem = IdempotentCreate(session, owner_id, idempotency_key, "POST /v1/datasets", body.model_dump(), model=Dataset)
    if (replay := idem.replay()) is not None:
        return replay
    manifest = check_reference(body, settings)
    enforce_quota(check_new_ingest, session, owner_id, settings)
    ref = blobs.put_bytes(manifest_bytes(manifest))
    dataset = Dataset(owner_id=owner_id, name=reference_name(body, manifest), status="pending",
                      file_blob=ref.sha256, file_name=manifest["uri"][:300], archive_blob=None,
                      archive_name=(manifest["images_uri"] or "")[:300] or None, skill=body.skill)
    session.add(dataset)
    session.flush()
    job = create_job(session, owner_id, "ingest", "ingest", {"dataset_id": dataset.id, "reference": True},
                     max_attempts=settings.max_attempts)
    dataset.job_id = job.id
    session.flush()
    out = jsonable_encoder(DatasetCreatedOut.model_validate(RowWith(dataset, warnings=[])))
    idem.remember(202, out)
    if (replay := idem.commit()) is not None:
        return replay  # a concurrent request with the same Idempotency-Key committed first
    # After the commit, never before: a worker must find the rows the message points at.
    if not enqueue_job(settings, job.id, "ingest", "ingest"):
        note_unsent(session, job.id)
    return JSONResponse(out, status_code=202, headers={"Location": f"/v1/datasets/{dataset.id}"})
