"""One class per API resource; `Client` holds one of each (client.datasets, client.pools ...)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from core.statuses import TERMINAL
from service.client.downloads import (
    Download, IndexDownload, download_checkpoint, download_index, download_to, index_head,
)
from service.client.errors import WaitTimeout
from service.client.http import Http, new_idempotency_key
from service.client.models import (
    Checkpoint, Clusters, Dataset, Job, JobEvent, Pool, PoolMetrics, Round, Sample,
)

_UNSET: Any = object()


def _q(resource_id: str) -> str:
    """An id as one path segment: `a/b` cannot reach another route."""
    return quote(str(resource_id), safe="")


class _Resource:
    def __init__(self, http: Http) -> None:
        self._http = http


class Datasets(_Resource):
    def upload(self, file: str | Path, images: str | Path | None = None, *, name: str | None = None,
               skill: str | None = None, idempotency_key: str | None = None) -> Dataset:
        """Upload a dataset file (and images archive); the API validates it and queues its ingest job."""
        file, images = Path(file), Path(images) if images else None
        with file.open("rb") as f, (images.open("rb") if images else nullcontext()) as g:
            files: dict[str, Any] = {"file": (file.name, f, "application/octet-stream")}
            if g is not None:
                files["images"] = (images.name, g, "application/octet-stream")
            data = {k: v for k, v in (("name", name), ("skill", skill)) if v} or None
            # Idempotent, so a 502 mid-upload is retried (httpx rewinds the files) without a twin.
            response = self._http.request("POST", "/v1/datasets", files=files, data=data, timeout=None,
                                          idempotency_key=idempotency_key or new_idempotency_key())
        return Dataset.model_validate(response.json())

    def from_uri(self, uri: str, images_uri: str | None = None, *, name: str | None = None,
                 format: str | None = None, skill: str | None = None) -> Dataset:  # noqa: A002 - the API's name
        """Ingest a dataset by reference (s3:// or file:// under a prefix the server allows)."""
        body = {k: v for k, v in (("uri", uri), ("images_uri", images_uri), ("name", name), ("format", format),
                                  ("skill", skill)) if v is not None}
        return self._http.send_json("POST", "/v1/datasets", body, Dataset, idempotent=True)

    def list(self) -> Iterator[Dataset]:
        return self._http.paged("/v1/datasets", Dataset)

    def get(self, dataset_id: str) -> Dataset:
        return self._http.get(f"/v1/datasets/{_q(dataset_id)}", Dataset)

    def samples(self, dataset_id: str, *, after: int | None = None) -> Iterator[Sample]:
        return self._http.paged(f"/v1/datasets/{_q(dataset_id)}/samples", Sample, after=after)

    def patch(self, dataset_id: str, *, skill: str | None = _UNSET) -> Dataset:
        """Set (or with `skill=None` clear) a ready dataset's declared skill."""
        body = {} if skill is _UNSET else {"skill": skill}
        return self._http.send_json("PATCH", f"/v1/datasets/{_q(dataset_id)}", body, Dataset)

    def delete(self, dataset_id: str) -> None:
        self._http.request("DELETE", f"/v1/datasets/{_q(dataset_id)}")


class Pools(_Resource):
    def create(self, name: str, base_model: str, model_type: str, *, config: dict[str, Any] | None = None,
               eval_sets: list[dict[str, str]] | None = None) -> Pool:
        body = {"name": name, "base_model": base_model, "model_type": model_type, "config": config,
                "eval_sets": eval_sets or []}
        return self._http.send_json("POST", "/v1/pools", body, Pool, idempotent=True)

    def list(self) -> Iterator[Pool]:
        return self._http.paged("/v1/pools", Pool)

    def get(self, pool_id: str) -> Pool:
        return self._http.get(f"/v1/pools/{_q(pool_id)}", Pool)

    def add_eval_set(self, pool_id: str, dataset_id: str, skill: str) -> Pool:
        body = {"dataset_id": dataset_id, "skill": skill}
        return self._http.send_json("POST", f"/v1/pools/{_q(pool_id)}/eval-sets", body, Pool)

    def clusters(self, pool_id: str) -> Clusters:
        return self._http.get(f"/v1/pools/{_q(pool_id)}/clusters", Clusters)

    def metrics(self, pool_id: str, *, reference_pool_id: str | None = None) -> PoolMetrics:
        return self._http.get(f"/v1/pools/{_q(pool_id)}/metrics", PoolMetrics, reference_pool_id=reference_pool_id)

    def delete(self, pool_id: str) -> None:
        """Delete the pool, its rounds and checkpoints (409 while a round is unfinished)."""
        self._http.request("DELETE", f"/v1/pools/{_q(pool_id)}")

    def remove_dataset(self, pool_id: str, dataset_id: str) -> None:
        """Take a dataset's samples (members, selections, scores) and its eval-set link out of the pool."""
        self._http.request("DELETE", f"/v1/pools/{_q(pool_id)}/datasets/{_q(dataset_id)}")

    def remove_eval_set(self, pool_id: str, dataset_id: str) -> None:
        self._http.request("DELETE", f"/v1/pools/{_q(pool_id)}/eval-sets/{_q(dataset_id)}")

    def download_index(self, pool_id: str, path: str | Path | None = None, *,
                       round_number: int | None = None) -> IndexDownload:
        """The pool's FAISS index (config `pool_index`; the latest round's, or `round_number`'s) to
        `path` (default <pool>-round<N>.faiss): resumes a `.part` file, checks the sha256. A damaged
        version answers 503 while a job rebuilds it; the client retries that on its own."""
        if path is None:
            number = round_number or int(index_head(self._http, f"/v1/pools/{_q(pool_id)}/index")["x-index-round"])
            path, round_number = f"{pool_id}-round{number}.faiss", number
        return download_index(self._http, pool_id, Path(path), round_number)


class Rounds(_Resource):
    def create(self, pool_id: str, dataset_ids: list[str], budget: int | float, **params: Any) -> Round:
        """Start a round; `params` are the other round parameters (method, seed, candidates, train, prune)."""
        body = {"dataset_ids": dataset_ids, "budget": budget} | {k: v for k, v in params.items() if v is not None}
        return self._http.send_json("POST", f"/v1/pools/{_q(pool_id)}/rounds", body, Round, idempotent=True)

    def list(self, pool_id: str) -> Iterator[Round]:
        return self._http.paged(f"/v1/pools/{_q(pool_id)}/rounds", Round)

    def get(self, round_id: str) -> Round:
        return self._http.get(f"/v1/rounds/{_q(round_id)}", Round)

    def download_selection(self, round_id: str, dest: str | Path | BinaryIO, *, format: str = "jsonl") -> int:  # noqa: A002
        """Write the selected samples (jsonl, json or tar) to a path (atomically) or a binary file; bytes written."""
        return download_to(self._http, f"/v1/rounds/{_q(round_id)}/selection", dest, params={"format": format})


class Jobs(_Resource):
    def list(self, *, status: str | None = None, kind: str | None = None,
             parent_id: str | None = None) -> Iterator[Job]:
        return self._http.paged("/v1/jobs", Job, status=status, kind=kind, parent_id=parent_id)

    def get(self, job_id: str) -> Job:
        return self._http.get(f"/v1/jobs/{_q(job_id)}", Job)

    def events(self, job_id: str, *, after: int | None = None) -> Iterator[JobEvent]:
        """The job's events, oldest first; `after` an event id to get only newer ones."""
        return self._http.paged(f"/v1/jobs/{_q(job_id)}/events", JobEvent, after=after)

    def cancel(self, job_id: str) -> Job:
        return self._http.send_json("POST", f"/v1/jobs/{_q(job_id)}/cancel", None, Job)

    def wait(self, job_id: str, *, timeout: float | None = None, on_update: Callable[[Job], None] | None = None,
             interval: float = 1.0) -> Job:
        """Poll until the job ends and return it; `on_update(job)` after every poll.

        Raises WaitTimeout (a TimeoutError) after `timeout` seconds; the job keeps running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() + interval > deadline:
                raise WaitTimeout(job_id, timeout, job)
            time.sleep(interval)


class Checkpoints(_Resource):
    def list(self, *, pool_id: str | None = None) -> Iterator[Checkpoint]:
        return self._http.paged("/v1/checkpoints", Checkpoint, pool_id=pool_id)

    def get(self, checkpoint_id: str) -> Checkpoint:
        return self._http.get(f"/v1/checkpoints/{_q(checkpoint_id)}", Checkpoint)

    def download(self, checkpoint_id: str, path: str | Path | None = None) -> Download:
        """The adapter tar.gz to `path` (default <id>.tar.gz): resumes a `.part` file, checks the sha256."""
        ckpt = self.get(checkpoint_id)
        return download_checkpoint(self._http, ckpt, Path(path or f"{checkpoint_id}.tar.gz"))
