"""Loaded models kept per worker process, keyed by (base model spec, adapter checkpoint sha).

A GPU worker runs one task at a time and feature shards of one round share one adapter, so
keeping the last model loaded saves a load per shard. Training mutates the adapter in place: it
`take`s the model out of the cache and `put`s it back under the new checkpoint's sha.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from core.adapter_archive import adapter_cache_dir
from service.config import Settings
from core.blobs import BlobStore
from workers.engine.models import LoadedModel, LoraSpec, ModelSpec, load_model
from workers.rounds.checkpoints import unpack_adapter

# One model: a 7B LLaVA in bf16 is ~14 GB, and a worker serves one pool at a time in practice.
MAX_MODELS = int(os.environ.get("ADAPTINF_MODEL_CACHE_SIZE", "1"))

# A fresh adapter (no checkpoint yet) is identified by its LoraSpec instead of a sha.
Key = tuple[ModelSpec, str | None, LoraSpec | None]

_cache: OrderedDict[Key, LoadedModel] = OrderedDict()
_lock = threading.Lock()


def _key(spec: ModelSpec, adapter_sha: str | None, lora: LoraSpec | None) -> Key:
    return (spec, adapter_sha, None if adapter_sha is not None else (lora or LoraSpec()))


def adapter_dir(settings: Settings, blobs: BlobStore, sha256: str) -> Path:
    """The unpacked adapter of checkpoint blob `sha256` (shared by the processes of one machine)."""
    return unpack_adapter(blobs, sha256, adapter_cache_dir(settings.work_dir, sha256))


def _load(settings: Settings, blobs: BlobStore, spec: ModelSpec, adapter_sha: str | None, lora: LoraSpec) -> LoadedModel:
    if adapter_sha is None:
        return load_model(spec, lora=lora)
    return load_model(spec, adapter_dir=adapter_dir(settings, blobs, adapter_sha))


def get_model(
    settings: Settings, blobs: BlobStore, spec: ModelSpec, adapter_sha: str | None, lora: LoraSpec
) -> LoadedModel:
    """A model for read-only use (features, evaluation); cached. `adapter_sha` None = fresh LoRA."""
    key = _key(spec, adapter_sha, lora)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    loaded = _load(settings, blobs, spec, adapter_sha, lora)
    put_model(spec, adapter_sha, loaded, lora)
    return loaded


def take_model(
    settings: Settings, blobs: BlobStore, spec: ModelSpec, adapter_sha: str | None, lora: LoraSpec
) -> LoadedModel:
    """A model the caller may mutate (training): removed from the cache, or loaded afresh."""
    with _lock:
        loaded = _cache.pop(_key(spec, adapter_sha, lora), None)
    return loaded if loaded is not None else _load(settings, blobs, spec, adapter_sha, lora)


def put_model(spec: ModelSpec, adapter_sha: str | None, loaded: LoadedModel, lora: LoraSpec | None = None) -> None:
    """Cache `loaded` as the model of (spec, adapter_sha), evicting the least recently used."""
    key = _key(spec, adapter_sha, lora)
    with _lock:
        _cache[key] = loaded
        _cache.move_to_end(key)
        while len(_cache) > max(0, MAX_MODELS):
            _cache.popitem(last=False)


def clear() -> None:
    with _lock:
        _cache.clear()
