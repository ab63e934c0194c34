"""Job statuses, one spelling for the API, the workers and the CLI (a round mirrors its parent job's)."""
from __future__ import annotations

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (RUNNING, CANCELLING)  # a worker holds (or held) a lease on it
UNFINISHED = (QUEUED,) + ACTIVE

# A dataset: pending until its ingest job writes every sample (ready) or ends otherwise (failed).
DATASET_PENDING, DATASET_READY, DATASET_FAILED = "pending", "ready", "failed"
