"""validate_upload end to end: happy paths over every input shape, and the first error of each kind."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from service.ingest import IngestError, IngestLimits, validate_upload
from service.ingest.formats import content_hash
from tests.datagen import (
    build_records,
    garbage_png,
    llava_record,
    openai_record,
    real_photos,
    truncated_jpeg,
    write_llava_dataset,
    write_records,
    write_tar,
    write_zip,
    write_zip_symlink,
)


def _err(*args, **kw) -> IngestError:
    with pytest.raises(IngestError) as info:
        validate_upload(*args, **kw)
    return info.value


@pytest.mark.parametrize(
    ("fmt", "archive", "style"),
    [("json", "zip", "llava"), ("jsonl", "tar.gz", "llava"), ("jsonl", "tar", "openai")],
)
def test_happy_path_keeps_checked_images(tmp_path, fmt, archive, style):
    dataset, arch = write_llava_dataset(tmp_path / "in", 8, multi_image=True, text_only=True, fmt=fmt, style=style, archive=archive)
    records, images = build_records(8, multi_image=True, text_only=True, style=style)
    got = validate_upload(dataset, arch, tmp_path / "work")
    assert got.num_samples == 8 and got.num_images == len(images) == 9  # 2 text-only, 3 two-image samples
    assert [s.record for s in got.samples] == records
    for name, data in images.items():
        img = got.images[name]
        assert img.path == tmp_path / "work" / "images" / name and img.path.read_bytes() == data
        assert img.sha256 == hashlib.sha256(data).hexdigest() and img.size == len(data)
    two = got.samples[1]
    assert [i.name for i in got.images_of(two)] == two.image_names == ["images/0001_0.png", "images/0001_1.png"]
    assert two.messages[0].content.count("<image>") == 2
    modes = {img.info.mode for img in got.images.values()}
    assert {"RGB", "L", "RGBA"} <= modes  # grayscale and alpha photos are valid
    assert got.samples[2].image_names == [] and got.content_hashes["s0002"]
    expected = content_hash(two, [hashlib.sha256(images[n]).hexdigest() for n in two.image_names])
    assert got.content_hashes["s0001"] == expected


def test_same_content_in_both_styles_hashes_equal(tmp_path):
    a, arch_a = write_llava_dataset(tmp_path / "a", 4, style="llava")
    b, arch_b = write_llava_dataset(tmp_path / "b", 4, style="openai", fmt="jsonl", archive="tar")
    ha = validate_upload(a, arch_a, tmp_path / "wa").content_hashes
    hb = validate_upload(b, arch_b, tmp_path / "wb").content_hashes
    assert ha == hb and len(set(ha.values())) == 4


def test_text_only_dataset_needs_no_archive(tmp_path):
    dataset, arch = write_llava_dataset(tmp_path, 5, with_images=False, fmt="jsonl")
    assert arch is None
    got = validate_upload(dataset, None, tmp_path / "work")
    assert (got.num_samples, got.num_images, got.images) == (5, 0, {})
    assert len(got.content_hashes) == 5


def test_real_photo_variants_validate(tmp_path):
    photos = real_photos()
    records = [llava_record(i, "Describe it.", f"Photo {name}.", [name]) for i, name in enumerate(photos)]
    records.append(openai_record("all", "Compare.", "They differ.", list(photos)))
    dataset = write_records(tmp_path / "d.json", records)
    got = validate_upload(dataset, write_zip(tmp_path, photos), tmp_path / "w")
    assert {n: (i.info.mode, i.info.format) for n, i in got.images.items()} == {
        "china.jpg": ("RGB", "JPEG"),
        "flower.png": ("RGB", "PNG"),
        "china_gray.png": ("L", "PNG"),
        "flower_gray.jpg": ("L", "JPEG"),
        "flower_rgba.png": ("RGBA", "PNG"),
    }
    assert len(got.images_of(got.samples[-1])) == 5


def test_check_and_list_modes_keep_nothing(tmp_path):
    dataset, arch = write_llava_dataset(tmp_path / "in", 4)
    checked = validate_upload(dataset, arch, tmp_path / "w1", image_mode="check")
    assert all(i.path is None for i in checked.images.values()) and len(checked.images) == 4
    assert not [p for p in (tmp_path / "w1").rglob("*") if p.is_file()]
    listed = validate_upload(dataset, arch, tmp_path / "w2", image_mode="list")
    assert listed.images == {} and listed.num_images == 4 and not (tmp_path / "w2").exists()
    assert checked.content_hashes == validate_upload(dataset, arch, tmp_path / "w3").content_hashes


def test_reference_matches_by_unique_basename(tmp_path):
    dataset = write_records(tmp_path / "d.json", [llava_record(1, "q", "a", ["/home/me/coco/x.jpg"])])
    arch = write_zip(tmp_path, {"export/coco/x.jpg": real_photos()["china.jpg"]})
    got = validate_upload(dataset, arch, tmp_path / "w")
    assert got.image_refs == {"/home/me/coco/x.jpg": "export/coco/x.jpg"}


@pytest.mark.parametrize("keep", [True, False])
def test_samples_whose_text_lacks_the_image_token_are_counted(tmp_path, keep):
    photo = real_photos()["china.jpg"]
    tokenless = llava_record("b", "q", "a", ["x.jpg"])
    tokenless["conversations"][0]["value"] = "q"  # an image, no <image>
    records = [llava_record("a", "q", "a", ["x.jpg"]), tokenless, {**tokenless, "id": "c"}, llava_record("d", "q", "a")]
    dataset = write_records(tmp_path / "d.json", records)
    got = validate_upload(dataset, write_zip(tmp_path, {"x.jpg": photo}), tmp_path / "w", keep_samples=keep)
    assert (got.tokens_placed, got.first_token_placed) == (2, "sample 'b' (line 16)")
    plain = validate_upload(write_records(tmp_path / "p.json", records[:1]), tmp_path / "images.zip", tmp_path / "w2")
    assert (plain.tokens_placed, plain.first_token_placed) == (0, None)


def test_missing_image_without_archive(tmp_path):
    dataset, _ = write_llava_dataset(tmp_path, 3)
    err = _err(dataset, None, tmp_path / "w")
    assert (err.code, err.status, err.sample_id, err.member) == ("missing_image", 422, "s0000", "images/0000_0.jpg")
    assert "no images archive" in err.detail


def test_missing_image_names_sample_and_image(tmp_path):
    records, images = build_records(4)
    del images["images/0002_0.png"]
    dataset = write_records(tmp_path / "d.jsonl", records, "jsonl")
    err = _err(dataset, write_zip(tmp_path, images), tmp_path / "w")
    assert (err.code, err.sample_id, err.line, err.member) == ("missing_image", "s0002", 3, "images/0002_0.png")
    assert "'s0002'" in err.detail and "'images/0002_0.png'" in err.detail


def test_ambiguous_image_reference(tmp_path):
    dataset = write_records(tmp_path / "d.json", [llava_record("a", "q", "a", ["x.jpg"])])
    photo = real_photos()["china.jpg"]
    err = _err(dataset, write_zip(tmp_path, {"one/x.jpg": photo, "two/x.jpg": photo}), tmp_path / "w")
    assert err.code == "ambiguous_image" and "'one/x.jpg'" in err.detail and err.sample_id == "a"


@pytest.mark.parametrize("bad", [truncated_jpeg(), garbage_png()])
def test_corrupt_image_names_sample_and_image(tmp_path, bad):
    records, images = build_records(4)
    images["images/0001_0.png"] = bad
    dataset = write_records(tmp_path / "d.json", records)
    err = _err(dataset, write_tar(tmp_path, images, gz=True), tmp_path / "w")
    assert (err.code, err.status, err.sample_id, err.member) == ("corrupt_image", 422, "s0001", "images/0001_0.png")
    assert err.detail.startswith("sample 's0001' (line ")


@pytest.mark.parametrize("keep", [True, False])
def test_duplicate_ids_name_both_occurrences(tmp_path, keep):
    records = [llava_record("a", "q", "x"), llava_record("b", "q", "y"), llava_record("a", "q", "z"),
               llava_record("b", "q", "w")]
    err = _err(write_records(tmp_path / "d.jsonl", records, "jsonl"), None, tmp_path / "w", keep_samples=keep)
    assert (err.code, err.status, err.sample_id, err.line) == ("duplicate_sample_id", 422, "a", 3)
    assert "(line 1)" in err.detail and "(line 3)" in err.detail


@pytest.mark.parametrize("keep", [True, False])
def test_a_duplicate_outranks_a_later_bad_record_either_way(tmp_path, keep):
    good = [llava_record("a", "q", "x"), llava_record("b", "q", "y"), llava_record("a", "q", "z")]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good) + '\n{"id": "c", "conversations": 5}\n{"id": \n')
    err = _err(path, None, tmp_path / "w", keep_samples=keep)
    assert (err.code, err.sample_id, err.line) == ("duplicate_sample_id", "a", 3)
    # with no duplicate before it, the bad record is the first error
    path.write_text("\n".join(json.dumps(r) for r in good[:2]) + '\n{"id": "c", "conversations": 5}\n')
    assert _err(path, None, tmp_path / "w2", keep_samples=keep).code == "invalid_conversations"


@pytest.mark.parametrize("keep", [True, False])
def test_int_id_and_position_key_collide(tmp_path, keep):
    records = [llava_record(2, "q", "x"), {k: v for k, v in llava_record(0, "q", "y").items() if k != "id"}]
    err = _err(write_records(tmp_path / "d.json", records), None, tmp_path / "w", keep_samples=keep)
    assert err.code == "duplicate_sample_id" and "keyed by its position" in err.detail


def test_without_samples_the_same_checks_pass_and_count_in_memory_of_one_sample(tmp_path):
    import tracemalloc

    dataset, arch = write_llava_dataset(tmp_path / "in", 8, multi_image=True, text_only=True)
    kept = validate_upload(dataset, arch, tmp_path / "w1", image_mode="check")
    lean = validate_upload(dataset, arch, tmp_path / "w2", image_mode="check", keep_samples=False)
    assert (lean.samples, lean.content_hashes) == ([], {}) and lean.num_samples == kept.num_samples == 8
    assert lean.num_images == kept.num_images and lean.image_refs == kept.image_refs
    big = write_records(tmp_path / "big.jsonl", [llava_record(f"s{i}", "q " * 50, f"answer {i} " * 50)
                                                 for i in range(20_000)], "jsonl")
    tracemalloc.start()
    try:
        assert validate_upload(big, None, tmp_path / "w3", keep_samples=False).num_samples == 20_000
        lean_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        validate_upload(big, None, tmp_path / "w4")
        kept_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert big.stat().st_size > 15 * 2**20 and lean_peak < 2 * 2**20 < 10 * lean_peak < kept_peak, (lean_peak, kept_peak)


@pytest.mark.parametrize("text", ["", "  \n", "[]", "[\n]\n", "\n\n"])
def test_empty_dataset(tmp_path, text):
    path = tmp_path / "d"
    path.write_text(text)
    err = _err(path, None, tmp_path / "w")
    assert (err.code, err.status) == ("empty_dataset", 422)


def test_unsafe_archive_rejected_before_extraction(tmp_path):
    dataset, _ = write_llava_dataset(tmp_path / "in", 2)
    _, images = build_records(2)
    err = _err(dataset, write_zip_symlink(tmp_path, members=images), tmp_path / "w")
    assert err.code == "unsafe_archive_member" and not (tmp_path / "w").exists()
    traversal = write_zip(tmp_path, {**images, "../../x.jpg": b"x"}, name="t.zip")
    assert _err(dataset, traversal, tmp_path / "w").code == "unsafe_archive_member"


def test_archive_limits_apply(tmp_path):
    dataset, arch = write_llava_dataset(tmp_path / "in", 4)
    total = sum(len(d) for d in build_records(4)[1].values())
    assert _err(dataset, arch, tmp_path / "w", IngestLimits(max_uncompressed_bytes=total - 1)).code == "archive_too_large"
    assert _err(dataset, arch, tmp_path / "w", IngestLimits(max_members=3)).code == "too_many_members"
    assert _err(dataset, arch, tmp_path / "w", IngestLimits(max_image_pixels=100)).code == "image_too_large"


def test_record_skills_are_parsed_and_their_number_is_limited(tmp_path):
    records = [llava_record(f"r{i}", "q", "a") | {"skill": f" skill-{i % 3} "} for i in range(6)]
    records[5].pop("skill")
    dataset = write_records(tmp_path / "d.json", records)
    ok = validate_upload(dataset, None, tmp_path / "w")
    assert [s.skill for s in ok.samples] == ["skill-0", "skill-1", "skill-2", "skill-0", "skill-1", None]
    err = _err(dataset, None, tmp_path / "w", IngestLimits(max_skills=2))
    assert (err.code, err.status, err.sample_id, err.field) == ("too_many_skills", 413, "r2", "skill") and err.line > 1
    records[1]["skill"] = 7
    err = _err(write_records(tmp_path / "e.json", records), None, tmp_path / "w")
    assert (err.code, err.sample_id, err.field) == ("invalid_skill", "r1", "skill") and "must be a string" in err.detail


def test_dataset_errors_come_before_archive_errors(tmp_path):
    records, images = build_records(3)
    records[2]["conversations"][1]["from"] = "bot"
    dataset = write_records(tmp_path / "d.json", records)
    err = _err(dataset, write_zip(tmp_path, {**images, "/abs.jpg": b"x"}), tmp_path / "w")
    assert (err.code, err.sample_id) == ("unknown_role", "s0002")


def test_error_to_dict_is_json_ready(tmp_path):
    dataset = write_records(tmp_path / "d.json", [llava_record("a", "q", "a", ["x.jpg"])])
    body = _err(dataset, None, tmp_path / "w").to_dict()
    assert json.loads(json.dumps(body)) == {
        "code": "missing_image",
        "status": 422,
        "detail": "sample 'a' (line 2) references image 'x.jpg', but no images archive was uploaded",
        "line": 2,
        "sample_id": "a",
        "member": "x.jpg",
    }


def test_bad_image_mode():
    with pytest.raises(ValueError, match="image_mode"):
        validate_upload("x", None, "w", image_mode="fast")  # type: ignore[arg-type]


def test_ingest_imports_no_heavy_dependencies():
    import subprocess
    import sys

    code = "import sys, service.ingest; print(sorted(m for m in ('torch', 'transformers', 'faiss', 'fastapi', 'sqlalchemy') if m in sys.modules))"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "[]"
