"""Settings, read from ADAPTINF_* environment variables and validated at load."""
from __future__ import annotations

import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.blobs import BlobStore, LocalBlobStore
from core.blobs.location import S3Location

_stores: dict[tuple[object, ...], BlobStore] = {}
_stores_lock = threading.Lock()


class Settings(BaseSettings):
    """Every knob of the service; defaults give the embedded single-machine mode."""

    model_config = SettingsConfigDict(env_prefix="ADAPTINF_", extra="ignore")

    data_dir: Path = Field(Path("adaptinf-data"), description="Root of the SQLite file, blob store and broker queue.")
    blob_store_url: str = Field(
        "", validation_alias=AliasChoices("ADAPTINF_BLOB_STORE", "blob_store_url"),
        description="Where blobs (uploads, images, shards, checkpoints) live: empty, the data directory; "
        "`s3://bucket/prefix`, an S3-compatible bucket (credentials from the standard AWS chain: "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role).")
    s3_endpoint_url: str = Field("", description="The S3 API's URL for MinIO, R2, Ceph...; empty: AWS S3 itself.")
    blob_cache_dir: Path | None = Field(
        None, description="With blobs in S3: the local folder of blob copies for libraries that need a file "
        "(images, shards, archives); default data_dir/blob-cache.")
    blob_cache_mb: int = Field(
        20480, ge=0, description="With blobs in S3: the size (MiB) past which the local blob cache drops its "
        "least recently used copies (never one used in the last blob_cache_keep_hours).")
    blob_cache_keep_hours: float = Field(
        24.0, ge=0, description="A cached blob copy used this recently is never dropped: a running job may "
        "still open it (a training set's images, every epoch).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    broker_url: str | None = Field(None, description="Celery broker URL; default: kombu filesystem transport in data_dir.")
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="Largest accepted upload, per file.")
    max_record_bytes: int = Field(16 * 1024**2, gt=0, description="Largest sample (its JSON text) in a dataset "
                                  "file; the upload readers hold one sample at a time, so this bounds their memory.")
    ingest_allowed_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated s3:// and file:// prefixes under which a dataset may be "
        "ingested by reference (POST /v1/datasets with a JSON body naming a `uri`); empty: none. file:// paths "
        "are resolved (symlinks, '..') before the check, and prefixes match whole path segments.")
    min_free_disk_mb: int = Field(
        256, ge=0, description="Free space (MiB) the data directory's disk must keep: below it /readyz answers "
        "503, so an orchestrator stops sending work before uploads and rounds fail with 507. 0 turns the check off.")
    lease_seconds: float = Field(60.0, gt=0, description="How long a job's lease lasts without a heartbeat.")
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often a running job renews its lease.")
    reaper_interval_seconds: float = Field(15.0, gt=0, description="How often expired leases are looked for.")
    max_attempts: int = Field(3, ge=1, description="Attempts of a job before it fails for good.")
    device: str = Field("auto", description="Torch device for workers: auto, cpu, cuda, cuda:N.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads torch uses in each worker process; default: torch's own (one per "
        "core). With several workers, or other work, on one CPU machine, keep workers × threads <= cores: "
        "oversubscribed, torch's threads wait on each other (measured here: features at 39 samples/s with 2 "
        "threads, 115 with 1, while another process kept both cores busy).")
    allow_model_downloads: bool = Field(False, description="Let workers fetch base models from the Hub.")
    models_root: Path | None = Field(None, description="Directory under which pools may name local model directories.")
    allowed_base_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated patterns (fnmatch: `HuggingFaceTB/*`) of the Hugging Face "
        "ids a pool may name as its base model; empty: any id (already cached, or with downloads on). Presets and "
        "paths under models_root are not affected.")
    preset_cache: Path | None = Field(None, description="Where pretrained presets (smol-lm, smol-llava) are built "
                                      "and cached; default data_dir/models.")
    worker_heartbeat_file: Path | None = Field(
        None, description="The file a worker rewrites every heartbeat_seconds once ready, and `adaptinf "
        "worker-health` reads; default: adaptinf-worker.heartbeat in the system temp folder (one worker per "
        "container; give several workers on one host a file each).")
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port on which a worker serves its Prometheus metrics "
        "(stage durations, feature throughput, train loss); default: not served.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the CLI client commands send requests.")
    api_key: str | None = Field(None, description="Bearer key the CLI client commands send.")
    # Upper bounds on a pool's numbers (service/pool_limits.py): above one, creating the pool is a 422.
    max_lora_rank: int = Field(512, ge=1, description="Largest lora.r a pool may ask for.")
    max_lora_alpha: int = Field(4096, ge=1, description="Largest lora.alpha.")
    max_proj_dim: int = Field(65536, ge=1, description="Largest features.proj_dim.")
    max_batch_size: int = Field(1024, ge=1, description="Largest features.batch_size and training.batch_size.")
    max_sequence_length: int = Field(32768, ge=2, description="Largest features.max_length and "
                                     "training.max_length (null, no limit, is refused).")
    max_clusters: int = Field(10_000, ge=1, description="Largest selection.n_clusters.")
    max_strata: int = Field(10_000, ge=1, description="Largest selection.n_strata.")
    max_epochs: int = Field(100, ge=1, description="Largest training.epochs.")
    max_train_steps: int = Field(1_000_000, ge=1, description="Largest training.max_steps.")
    max_lr: float = Field(1.0, gt=0, description="Largest training.lr and training.projector_lr.")
    max_shard_size: int = Field(100_000, ge=1, description="Largest shard_size (samples per feature job).")
    # Per-owner caps (service/owner_quotas.py): above one, a new round or upload is a 429.
    max_active_rounds_per_owner: int = Field(
        4, ge=1, description="Rounds an owner may have queued or running at once, over all their pools.")
    max_queued_jobs_per_owner: int = Field(
        16, ge=1, description="Unfinished jobs (ingests and rounds, not counting their stages) an owner may have.")
    quota_retry_after_seconds: int = Field(
        30, ge=1, description="The Retry-After a 429 (a per-owner cap reached) carries: how long a client "
        "should back off before trying again.")
    body_read_timeout_seconds: float = Field(
        15.0, gt=0, description="Longest wait for the next part of a request body; past it the request is a 408 "
        "and the connection is closed (a body shorter than its Content-Length would otherwise hold it forever).")
    stale_upload_seconds: float = Field(
        3600.0, ge=300, description="An upload's temp folder untouched this long is from a crashed request, and "
        "removed; at least 5 minutes, so a live upload between two writes (validating, waiting for a lock) is safe.")
    upload_sweep_seconds: float = Field(
        600.0, gt=0, description="How often the API looks for stale upload temp folders (also once at start-up).")
    public_metrics: bool = Field(True, description="Serve /metrics without an API key; false: it needs one.")
    public_docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json without an API key; false: "
                              "they need one.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"ADAPTINF_DEVICE must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("blob_store_url")
    @classmethod
    def _check_blob_store(cls, v: str) -> str:
        v = v.strip()
        return S3Location.parse(v).url if v else ""  # raises naming ADAPTINF_BLOB_STORE

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not (v.startswith(("http://", "https://")) and len(v.split("://", 1)[1]) > 0):
            raise ValueError(f"ADAPTINF_S3_ENDPOINT_URL must be empty (AWS S3) or an http(s):// URL, got {v!r}")
        return v

    @field_validator("ingest_allowed_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, v: object) -> object:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list):
            from service.ingest.sources import parse_prefixes  # raises naming the setting and the bad prefix

            parse_prefixes(v)
        return v

    @field_validator("allowed_base_models", mode="before")
    @classmethod
    def _split_patterns(cls, v: object) -> object:
        if isinstance(v, str):  # the environment gives one comma-separated string
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'adaptinf.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Folder of the kombu filesystem transport (embedded mode only)."""
        return (self.data_dir / "broker").resolve()

    @property
    def heartbeat_file(self) -> Path:
        return self.worker_heartbeat_file or Path(tempfile.gettempdir()) / "adaptinf-worker.heartbeat"

    @property
    def blob_dir(self) -> Path:
        return (self.data_dir / "blobs").resolve()

    @property
    def blob_cache_path(self) -> Path:
        return (self.blob_cache_dir or self.data_dir / "blob-cache").resolve()

    def blob_store(self) -> BlobStore:
        """The blob store these settings name. An S3 store is made once per process (it holds the
        client and the cache's size count), so callers may ask for it on every task."""
        if not self.blob_store_url:
            return LocalBlobStore(self.blob_dir)
        key = (os.getpid(), self.blob_store_url, self.s3_endpoint_url, self.blob_cache_path, self.blob_cache_mb,
               self.blob_cache_keep_hours)
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                from core.blobs.s3 import S3BlobStore  # boto3 loads only when blobs are in S3

                store = S3BlobStore(self.blob_store_url, endpoint_url=self.s3_endpoint_url,
                                    cache_dir=self.blob_cache_path, cache_max_bytes=self.blob_cache_mb * 2**20,
                                    cache_keep_s=self.blob_cache_keep_hours * 3600)
                _stores[key] = store
            return store

    @property
    def preset_dir(self) -> Path:
        return (self.preset_cache or self.data_dir / "models").resolve()

    @property
    def work_dir(self) -> Path:
        """Scratch space for uploads being validated and stages in progress."""
        return (self.data_dir / "work").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
