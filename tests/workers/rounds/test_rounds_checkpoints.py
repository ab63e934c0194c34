"""Adapter archives: root layout, reproducible bytes, strict unpacking."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from core.blobs import LocalBlobStore
from workers.rounds.checkpoints import CheckpointBlobError, pack_adapter, unpack_adapter


def _adapter(d: Path, payload: bytes = b"weights") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(payload)
    (d / "README.md").write_text("model card: not part of the archive")
    return d


def test_pack_is_reproducible_and_unpacks(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    one = blobs.put_file(pack_adapter(_adapter(tmp_path / "a"), tmp_path / "a.tar.gz"))
    (tmp_path / "b").mkdir()
    two = blobs.put_file(pack_adapter(_adapter(tmp_path / "b"), tmp_path / "b.tar.gz"))
    assert one.sha256 == two.sha256  # no time or path in the archive
    with blobs.open(one.sha256) as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
        names = tar.getnames()
    assert sorted(names) == [
        "adapter_config.json", "adapter_model.safetensors"]
    out = unpack_adapter(blobs, one.sha256, tmp_path / "out")
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_unpack_refuses_other_members_and_corrupt_blobs(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("adapter_config.json", "../adapter_model.safetensors"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    bad = blobs.put_bytes(buf.getvalue())
    with pytest.raises(CheckpointBlobError, match="expected"):
        unpack_adapter(blobs, bad.sha256, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(CheckpointBlobError, match="missing or corrupt"):
        unpack_adapter(blobs, "0" * 64, tmp_path / "y")
