"""A PEFT adapter directory packed as a reproducible tar.gz, and where unpacked adapters are kept.

Shared by the workers (which pack and unpack checkpoints) and the API (which re-packs a cached
adapter to repair a corrupt checkpoint blob). The archive's root holds exactly
`adapter_config.json` and `adapter_model.safetensors`; member metadata and the gzip header
carry no time or owner, so the same two files always give the same bytes and sha256.
"""
from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_cache_dir(work_dir: Path, sha256: str) -> Path:
    """Where the adapter of checkpoint blob `sha256` is kept unpacked (the adapter cache)."""
    return Path(work_dir) / "adapters" / sha256


def is_adapter_dir(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in ADAPTER_FILES)


def pack_adapter(adapter_dir: Path, dest: Path) -> Path:
    """Write `adapter_dir`'s two adapter files as a tar.gz at `dest`."""
    adapter_dir = Path(adapter_dir)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in ADAPTER_FILES:
                path = adapter_dir / name
                if not path.is_file():
                    raise FileNotFoundError(f"adapter directory {str(adapter_dir)!r} has no {name}")
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return dest
