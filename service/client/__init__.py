"""A typed Python client of the Adapt-∞ API (httpx + pydantic; imports no torch and no workers).

    from service.client import Client

    with Client("http://127.0.0.1:8000", key) as api:
        ds = api.datasets.upload("train.jsonl", "images.zip", skill="count")
        api.jobs.wait(ds.job_id, on_update=lambda job: print(job.stage, job.progress.done))
        for pool in api.pools.list():  # pages fetched as you iterate
            print(pool.id, pool.size)

A refusal raises ApiError (its `.problem` is the problem+json); no answer raises ApiUnreachable.
"""
from __future__ import annotations

from service.client.client import Client
from service.client.downloads import Download, IndexDownload
from service.client.errors import ApiError, ApiUnreachable, ChecksumMismatch, ClientError, WaitTimeout
from service.client.models import (
    Checkpoint, Clusters, Dataset, Job, JobEvent, Overall, Pool, PoolMetrics, Problem, Progress, Round, Sample,
)

__all__ = [
    "ApiError", "ApiUnreachable", "Checkpoint", "ChecksumMismatch", "Client", "ClientError", "Clusters", "Dataset",
    "Download", "IndexDownload", "Job", "JobEvent", "Overall", "Pool", "PoolMetrics", "Problem", "Progress", "Round",
    "Sample", "WaitTimeout",
]
