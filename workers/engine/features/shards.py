"""Feature shards on disk: atomic writes and checksums (a round stores each as a blob)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from core.files import atomic_write
from workers.engine.features.config import SCORE_NAMES, FeatureBatch

SHARD_FORMAT = 1


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
