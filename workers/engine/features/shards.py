"""Feature shards on disk: atomic writes, checksums, and a resumable streaming pass."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from core.files import atomic_write, file_sha256
from core.samples import EngineSample
from workers.engine.features.config import SCORE_NAMES, FeatureBatch, FeatureConfig
from workers.engine.models.loading import LoadedModel

SHARD_FORMAT = 1


@dataclass(frozen=True)
class ShardInfo:
    """Reported to `on_shard` once per shard, computed or skipped."""

    index: int
    path: Path
    sha256: str
    n: int
    skipped: bool


def shard_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / f"shard-{index:05d}.npz"


def write_shard(path: str | Path, batch: FeatureBatch, meta: dict[str, Any] | None = None) -> str:
    """Write `batch` atomically (temp file + fsync + rename) and return the file's sha256 (hex)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    arrays = {f"score_{k}": batch.scores[k].astype(np.float32) for k in SCORE_NAMES}
    if batch.hidden is not None:
        arrays["hidden"] = batch.hidden.astype(np.float16)
    header = json.dumps({"format": SHARD_FORMAT, **(meta or {})}, sort_keys=True)
    np.savez(buf, ids=batch.ids.astype(np.int64), features=batch.features.astype(np.float16), meta=np.array(header), **arrays)
    data = buf.getvalue()
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def read_shard_meta(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def read_shard(path: str | Path) -> FeatureBatch:
    """Read a shard written by `write_shard`; a malformed file raises ValueError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return FeatureBatch(
                ids=z["ids"], features=z["features"], scores={k: z[f"score_{k}"] for k in SCORE_NAMES},
                hidden=z["hidden"] if "hidden" in z.files else None,
            )
    except (KeyError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"malformed feature shard {str(path)!r}: {exc}") from exc


def _chunks(samples: Iterable[EngineSample], size: int) -> Iterator[list[EngineSample]]:
    it = iter(samples)
    while chunk := list(islice(it, size)):
        yield chunk


def _is_complete(path: Path, ids: list[int], fingerprint: dict[str, Any]) -> bool:
    """A shard counts as done only if it holds exactly these samples under this config."""
    if not path.is_file():
        return False
    try:
        meta = read_shard_meta(path)
        done = read_shard(path)
    except (ValueError, KeyError, OSError):
        return False
    return meta.get("config") == fingerprint and done.ids.tolist() == ids


def stream_features(
    loaded: LoadedModel,
    samples: Iterable[EngineSample],
    cfg: FeatureConfig,
    out_dir: str | Path,
    shard_size: int,
    on_shard: Callable[[ShardInfo], None] | None = None,
) -> list[Path]:
    """Compute features shard by shard into `out_dir/shard-00000.npz`, ...

    Resumable: a shard already on disk with the same sample ids and config is skipped (the
    iterator must yield the same samples in the same order on a rerun); any other file at that
    name is recomputed. Returns the shard paths in order.
    """
    from workers.engine.features.compute import FeatureEngine

    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".shard-*.npz.*.tmp"):  # atomic_write's temp files, left by a crash mid-write
        stale.unlink(missing_ok=True)
    fingerprint = cfg.fingerprint()
    engine: FeatureEngine | None = None  # built lazily: a fully resumed run never needs the model
    paths: list[Path] = []
    for index, chunk in enumerate(_chunks(samples, shard_size)):
        path = shard_path(out_dir, index)
        ids = [s.id for s in chunk]
        if _is_complete(path, ids, fingerprint):
            info = ShardInfo(index, path, file_sha256(path), len(chunk), skipped=True)
        else:
            engine = engine or FeatureEngine(loaded, cfg)
            batch = engine.run(chunk)
            digest = write_shard(path, batch, meta={"config": fingerprint, "index": index})
            info = ShardInfo(index, path, digest, len(chunk), skipped=False)
        paths.append(path)
        if on_shard is not None:
            on_shard(info)
    return paths
