"""Hugging Face `save_to_disk` folders, written by `datasets` itself, read with pyarrow alone."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from datagen import build_records, image_bytes
from service.ingest import IngestError, IngestLimits, validate_upload
from service.ingest.readers import HFDatasetReader, sniff_format
from service.ingest.upload_checks import check_upload

datasets = pytest.importorskip("datasets", reason="datasets is a dev dependency")


def save_hf(folder, n=5, *, bad_row=None, num_shards=1):
    """n LLaVA samples with their image as HF's Image feature (bytes embedded by save_to_disk)."""
    records, _ = build_records(n)
    if bad_row is not None:
        records[bad_row]["conversations"] = [{"from": "human", "value": "<image>\\nq"}]  # no answer
    columns = {"id": [r["id"] for r in records], "conversations": [r["conversations"] for r in records],
               "image": [{"bytes": image_bytes(i), "path": f"{i}.png"} for i in range(n)]}
    ds = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    ds.save_to_disk(str(folder), num_shards=num_shards)
    return folder


def tar_folder(folder, dest, top="my-dataset"):
    with tarfile.open(dest, "w") as tf:
        tf.add(folder, arcname=top)
    return dest


def test_folder_reads_with_embedded_images_and_shard_locations(tmp_path):
    folder = save_hf(tmp_path / "hf", 6, num_shards=2)
    assert sniff_format(folder) == "hf"
    got = validate_upload(folder, None, tmp_path / "w")
    assert [s.key for s in got.samples] == [f"s{i:04d}" for i in range(6)] and got.num_images == 6
    assert [(s.loc.shard, s.loc.row) for s in got.samples][2:4] == [("data-00000-of-00002.arrow", 2),
                                                                    ("data-00001-of-00002.arrow", 0)]
    assert got.samples[1].record["image"] == "1.png"
    for i, sample in enumerate(got.samples):
        assert got.images_of(sample)[0].sha256 == hashlib.sha256(image_bytes(i)).hexdigest()


def test_a_bad_row_names_its_shard_and_row(tmp_path):
    folder = save_hf(tmp_path / "hf", 4, bad_row=3, num_shards=2)
    err = pytest.raises(IngestError, validate_upload, folder, None, tmp_path / "w").value
    assert (err.code, err.shard, err.row, err.sample_id) == ("missing_assistant_turn", "data-00001-of-00002.arrow",
                                                            1, "s0003")
    assert "(shard 'data-00001-of-00002.arrow', row 1)" in err.detail


def test_an_archived_folder_is_listed_at_upload_and_read_by_the_worker(tmp_path):
    archive = tar_folder(save_hf(tmp_path / "hf", 3), tmp_path / "hf.tar")
    assert sniff_format(archive) == "hf"
    assert check_upload(archive, None, tmp_path / "w0", IngestLimits()).format == "hf"
    got = validate_upload(archive, None, tmp_path / "w")
    assert got.num_samples == 3 and got.num_images == 3


def test_folder_problems_are_named(tmp_path):
    folder = save_hf(tmp_path / "hf", 2)
    state = json.loads((folder / "state.json").read_text())
    state["_data_files"] = [{"filename": "../outside.arrow"}]
    (folder / "state.json").write_text(json.dumps(state))
    err = pytest.raises(IngestError, HFDatasetReader(folder).check).value
    assert err.code == "corrupt_dataset" and "'../outside.arrow'" in err.detail
    (tmp_path / "elsewhere.arrow").write_bytes(b"x")
    state["_data_files"] = [{"filename": "linked.arrow"}]
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "linked.arrow").symlink_to(tmp_path / "elsewhere.arrow")
    assert "is a link" in pytest.raises(IngestError, HFDatasetReader(folder).check).value.detail
    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"a": [1]})}).save_to_disk(str(dd))
    assert "DatasetDict (1 split(s): 'train')" in pytest.raises(IngestError, HFDatasetReader(dd).check).value.detail
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("x/readme.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "no.tar").write_bytes(buf.getvalue())
    err = pytest.raises(IngestError, check_upload, tmp_path / "no.tar", None, tmp_path / "w", IngestLimits()).value
    assert err.code == "corrupt_dataset" and "state.json" in err.detail


def _ipc_shard(folder, table, compression=None):
    """A save_to_disk-shaped folder whose one shard is `table`, written by pyarrow directly."""
    import pyarrow as pa

    folder.mkdir()
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as f, \
            pa.ipc.new_stream(f, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return folder


def _bomb_table(rows, value_bytes):
    import pyarrow as pa

    records, _ = build_records(rows, with_images=False)
    table = pa.Table.from_pylist(records)
    pad = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["y" * value_bytes]))
    return table.append_column("pad", pad).combine_chunks()


def test_a_dictionary_encoded_shard_is_converted_a_slice_at_a_time(tmp_path):
    import pyarrow as pa

    folder = _ipc_shard(tmp_path / "hf", _bomb_table(2000, 100_000))
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    import tracemalloc

    base, arrow_peak, n = pa.total_allocated_bytes(), 0, 0
    tracemalloc.start()
    try:
        for _ in HFDatasetReader(folder).samples():
            n += 1
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - base)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 200 MB decoded in all; a slice is 256 rows (25.6 MB)
    assert n == 2000 and arrow_peak < 60_000_000 and python_peak < 80_000_000, (arrow_peak, python_peak)
    err = pytest.raises(IngestError, lambda: list(HFDatasetReader(folder, IngestLimits(
        max_row_group_bytes=5_000_000)).samples())).value
    assert (err.code, err.status, err.shard, err.row) == ("row_group_too_large", 413, "data-00000-of-00001.arrow", 0)


def test_compressed_shards_and_oversized_batches_are_refused_before_decoding(tmp_path):
    import pyarrow as pa

    records, _ = build_records(50, with_images=False)
    table = pa.Table.from_pylist(records)
    for codec in ("zstd", "lz4"):
        folder = _ipc_shard(tmp_path / codec, table, codec)
        err = pytest.raises(IngestError, HFDatasetReader(folder).check).value
        assert (err.code, err.status, err.shard) == ("compressed_stream", 422, "data-00000-of-00001.arrow")
        assert codec.upper() in err.detail or "LZ4/ZSTD" in err.detail
    folder = _ipc_shard(tmp_path / "plain", table)
    assert HFDatasetReader(folder).check() is None
    err = pytest.raises(IngestError, HFDatasetReader(folder, IngestLimits(max_row_group_bytes=1000)).check).value
    assert (err.code, err.status) == ("row_group_too_large", 413) and "record batch of" in err.detail


def test_an_archived_folders_shards_get_the_dataset_limit_not_the_images_one(tmp_path):
    """save_to_disk writes shards of up to 500 MB; the images archive's per-member limit is not theirs."""
    archive = tar_folder(save_hf(tmp_path / "hf", 4), tmp_path / "d.tar")
    shard = max(m.size for m in tarfile.open(archive).getmembers())
    small_members = IngestLimits(max_member_bytes=12_000, max_uncompressed_bytes=12_000)  # images: < 6 KB
    assert shard > 12_000
    got = validate_upload(archive, None, tmp_path / "w", small_members)
    assert got.num_samples == 4
    assert check_upload(archive, None, tmp_path / "w2", small_members).format == "hf"
    err = pytest.raises(IngestError, validate_upload, archive, None, tmp_path / "w3", IngestLimits(max_members=2)).value
    assert (err.code, err.status) == ("too_many_members", 413)
    assert "the dataset archive has more than 2" in err.detail and "images" not in err.detail


def test_a_dataset_dicts_file_is_not_followed_through_links_nor_echoed(tmp_path):
    dd = tmp_path / "dd"
    dd.mkdir()
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["x" * 5000] + [f"s{i}" for i in range(99)]}))
    detail = pytest.raises(IngestError, HFDatasetReader(dd).check).value.detail
    assert "100 split(s): '" + "x" * 40 + "', 's0'" in detail and len(detail) < 400 and "s10" not in detail
    (tmp_path / "secret.json").write_text(json.dumps({"splits": ["the secret"]}))
    (dd / "dataset_dict.json").unlink()
    (dd / "dataset_dict.json").symlink_to(tmp_path / "secret.json")
    err = pytest.raises(IngestError, HFDatasetReader(dd).check).value
    assert err.code == "corrupt_dataset" and "link" in err.detail and "secret" not in err.detail


def test_a_slice_is_sized_before_its_dictionary_is_decoded(tmp_path, monkeypatch):
    """256 rows of one 100 KB dictionary value would be 25.6 MB decoded: refused from the value
    lengths, before anything is decoded; a dictionary nested in a struct cannot be sized and is refused."""
    import pyarrow as pa

    from service.ingest.readers import arrow_ipc

    folder = _ipc_shard(tmp_path / "hf", _bomb_table(300, 100_000))
    monkeypatch.setattr(arrow_ipc, "decode", lambda part: pytest.fail("decoded before its size was checked"))
    err = pytest.raises(IngestError, lambda: list(HFDatasetReader(folder, IngestLimits(
        max_row_group_bytes=20_000_000)).samples())).value
    assert (err.code, err.row) == ("row_group_too_large", 0) and "decode to 256" in err.detail
    table = pa.Table.from_pylist(build_records(2, with_images=False)[0])
    inner = pa.StructArray.from_arrays([pa.array(["a", "b"]).dictionary_encode()], names=["v"])
    folder = _ipc_shard(tmp_path / "nested", table.append_column("meta", inner))
    err = pytest.raises(IngestError, HFDatasetReader(folder).check).value
    assert (err.code, err.field) == ("unsupported_column", "meta")
