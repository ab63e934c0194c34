"""The Parquet reader end to end through validation: archive paths, embedded {bytes, path} structs,
several row groups, and errors that name the row group and row."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen import build_records, image_bytes, truncated_jpeg, write_zip
from service.ingest import IngestError, IngestLimits, validate_upload
from service.ingest.readers import ParquetReader, sniff_format
from service.ingest.upload_checks import check_upload

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _write(path, rows, *, row_group_size=3, image_type=None):
    schema = None
    if image_type is not None:
        conv = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
        schema = pa.schema([("id", pa.string()), ("conversations", conv), ("image", image_type)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return path


def _embedded_rows(n):
    records, _ = build_records(n)
    rows = []
    for i, rec in enumerate(records):
        data = image_bytes(i)
        rows.append({**rec, "image": {"bytes": data, "path": f"photo{i}.png" if i % 2 else None}})
    return rows


def test_archive_paths_read_like_json_records(tmp_path):
    records, images = build_records(7)
    path = _write(tmp_path / "d.parquet", records)
    assert sniff_format(path) == "parquet" and pq.ParquetFile(path).num_row_groups == 3
    got = validate_upload(path, write_zip(tmp_path, images), tmp_path / "w")
    assert [s.record for s in got.samples] == records and got.num_images == 7
    assert [(s.loc.row_group, s.loc.row) for s in got.samples] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                                   (2, 0)]
    assert got.images_of(got.samples[4])[0].sha256 == hashlib.sha256(images[records[4]["image"]]).hexdigest()


def test_embedded_images_need_no_archive_and_hash_like_archived_ones(tmp_path):
    rows = _embedded_rows(5)
    path = _write(tmp_path / "d.parquet", rows, row_group_size=2, image_type=IMAGE_STRUCT)
    got = validate_upload(path, None, tmp_path / "w")
    assert got.num_samples == 5 and got.num_images == 5
    for i, sample in enumerate(got.samples):
        (img,) = got.images_of(sample)
        assert img.sha256 == hashlib.sha256(image_bytes(i)).hexdigest() and img.path.read_bytes() == image_bytes(i)
        # the stored record names the image: the writer's path, else its hash
        assert sample.record["image"] == (f"photo{i}.png" if i % 2 else img.sha256)
    # the same samples as JSON + archive give the same content hashes
    records, images = build_records(5)
    plain = validate_upload(_write(tmp_path / "p.parquet", records), write_zip(tmp_path, images), tmp_path / "w2")
    assert got.content_hashes == plain.content_hashes


def test_a_bad_row_names_its_row_group_and_row(tmp_path):
    records, images = build_records(8)
    records[5]["conversations"][1]["from"] = "robot"
    err = pytest.raises(IngestError, validate_upload, _write(tmp_path / "d.parquet", records),
                        write_zip(tmp_path, images), tmp_path / "w").value
    assert (err.code, err.row_group, err.row, err.sample_id, err.line) == ("unknown_role", 1, 2, "s0005", None)
    assert err.detail.startswith("sample 's0005' (row group 1, row 2), field 'conversations[1].from'")
    assert {"row_group": 1, "row": 2}.items() <= err.to_dict().items()


def test_a_corrupt_embedded_image_names_row_and_image(tmp_path):
    rows = _embedded_rows(4)
    rows[3]["image"] = {"bytes": truncated_jpeg(), "path": "broken.jpg"}
    path = _write(tmp_path / "d.parquet", rows, image_type=IMAGE_STRUCT)
    err = pytest.raises(IngestError, validate_upload, path, None, tmp_path / "w").value
    assert (err.code, err.row_group, err.row, err.member) == ("corrupt_image", 1, 0, "broken.jpg")


def test_schema_checks_are_cheap_and_name_the_column(tmp_path):
    records, _ = build_records(3, with_images=False)
    table = pa.Table.from_pylist(records).append_column("when", pa.array([0, 1, 2], pa.timestamp("s")))
    pq.write_table(table, tmp_path / "t.parquet")
    err = pytest.raises(IngestError, ParquetReader(tmp_path / "t.parquet").check).value
    assert (err.code, err.status, err.field) == ("unsupported_column", 422, "when") and "timestamp" in err.detail
    _write(tmp_path / "ok.parquet", records)
    assert check_upload(tmp_path / "ok.parquet", None, tmp_path / "w", IngestLimits()).num_samples == 3
    big = IngestLimits(max_row_group_bytes=10)
    assert pytest.raises(IngestError, ParquetReader(tmp_path / "ok.parquet", big).check).value.code == \
        "row_group_too_large"
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    assert pytest.raises(IngestError, ParquetReader(tmp_path / "bad.parquet").check).value.code == "corrupt_dataset"


def test_memory_holds_a_row_group_not_the_file(tmp_path):
    import tracemalloc

    records = [{**r, "pad": f"{i}" + "x" * 4000} for i, r in enumerate(build_records(4000, with_images=False)[0])]
    path = _write(tmp_path / "big.parquet", records, row_group_size=100)
    assert path.stat().st_size > 16 * 2**20 / 100  # (compressed: the pad repeats)
    arrow_peak, n = 0, 0
    tracemalloc.start()
    try:
        for _ in ParquetReader(path).samples():
            n += 1
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())  # Arrow's buffers, outside tracemalloc
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    whole = 4000 * 4000  # 16 MB of records; a row group is 1/40 of it
    assert n == 4000 and python_peak < whole / 8 and arrow_peak < whole / 8, (python_peak, arrow_peak)


def test_a_row_over_the_record_limit_is_413_with_its_place(tmp_path):
    records, _ = build_records(4, with_images=False)
    records[2]["conversations"][1]["value"] = "é" * 600  # 1,200 bytes in UTF-8
    path = _write(tmp_path / "d.parquet", records)
    err = pytest.raises(IngestError, validate_upload, path, None, tmp_path / "w",
                        IngestLimits(max_record_bytes=1000)).value
    assert (err.code, err.status, err.row_group, err.row) == ("record_too_large", 413, 0, 2)
    assert validate_upload(path, None, tmp_path / "w2", IngestLimits(max_record_bytes=2000)).num_samples == 4


def test_an_images_column_holds_several_embedded_images_and_archive_paths(tmp_path):
    """`images`: a list per row, each cell a {bytes, path} struct, or (bytes null) a path into the archive."""
    records, _ = build_records(3, with_images=False)
    rows = [{**rec, "images": [{"bytes": image_bytes(i, 0), "path": None}, {"bytes": None, "path": f"x/{i}.png"}]}
            for i, rec in enumerate(records)]
    for row in rows:
        row["conversations"][0]["value"] = "<image>\n<image>\n" + row["conversations"][0]["value"]
    path = _write(tmp_path / "d.parquet", rows)
    archive = write_zip(tmp_path, {f"x/{i}.png": image_bytes(i, 1) for i in range(3)})
    got = validate_upload(path, archive, tmp_path / "w")
    assert got.num_images == 6
    for i, sample in enumerate(got.samples):
        shas = [img.sha256 for img in got.images_of(sample)]
        assert shas == [hashlib.sha256(image_bytes(i, k)).hexdigest() for k in (0, 1)]
        assert sample.record["images"] == [shas[0], f"x/{i}.png"]
    err = pytest.raises(IngestError, validate_upload, path, None, tmp_path / "w2").value
    assert (err.code, err.member, err.row_group, err.row) == ("missing_image", "x/0.png", 0, 0)


def _bomb(path, rows, value_bytes):
    """`rows` records sharing one `value_bytes` string: dictionary-encoded, the file is a few KB."""
    records = [{**r, "pad": "y" * value_bytes} for r in build_records(rows, with_images=False)[0]]
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=rows)
    return path


def test_a_dictionary_encoded_bomb_is_read_a_small_batch_at_a_time(tmp_path):
    path = _bomb(tmp_path / "bomb.parquet", 2000, 100_000)
    meta = pq.ParquetFile(path).metadata
    assert path.stat().st_size < 100_000 and meta.row_group(0).total_byte_size < 1_000_000  # passes check()
    base, arrow_peak, n = pa.total_allocated_bytes(), 0, 0
    for _ in ParquetReader(path).samples():
        n += 1
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - base)
    # 200 MB decoded in all; one batch is 64 rows (6.4 MB)
    assert n == 2000 and arrow_peak < 20_000_000, arrow_peak


def test_batches_shrink_to_fit_the_limit_and_a_batch_decoding_over_it_is_413(tmp_path):
    path = _bomb(tmp_path / "bomb.parquet", 300, 100_000)
    reader = ParquetReader(path, IngestLimits(max_row_group_bytes=2_000_000))
    assert reader.check() == 300  # the encoded sizes are small
    base, arrow_peak, n = pa.total_allocated_bytes(), 0, 0
    for _ in reader.samples():  # 19 rows (1.9 MB) a batch
        n += 1
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - base)
    assert n == 300 and arrow_peak < 3_000_000, arrow_peak
    # one 10 KB dictionary value 1,000 times in each row's list: 10 MB a row, 13 KB on disk
    records = [{**r, "tags": ["z" * 10_000] * 1000} for r in build_records(8, with_images=False)[0]]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "lists.parquet")
    reader = ParquetReader(tmp_path / "lists.parquet", IngestLimits(max_row_group_bytes=5_000_000))
    assert reader.check() == 8
    err = pytest.raises(IngestError, lambda: list(reader.samples())).value
    assert (err.code, err.status, err.row_group, err.row) == ("row_group_too_large", 413, 0, 0)
    assert "decode to" in err.detail
