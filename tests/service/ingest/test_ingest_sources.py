"""References to datasets: which URIs parse, which lie under which prefixes, and the setting."""
from __future__ import annotations

import pytest

from service.ingest import IngestError
from service.ingest.sources import SETTING, parse_prefixes, parse_uri, resolve_allowed


@pytest.mark.parametrize(("uri", "words"), [
    ("http://example.com/d.json", "only s3:// and file://"),
    ("https://bucket.s3.amazonaws.com/d.json", "only s3:// and file://"),
    ("ftp://host/d.json", "only s3:// and file://"),
    ("/data/d.json", "scheme (none)"),
    ("file://otherhost/data/d.json", "host 'otherhost'"),
    ("file:relative/d.json", "absolute path"),
    ("s3:///key", "needs a bucket"),
    ("s3://bucket/a/../b", "'.' or '..'"),
    ("s3://bucket/d.json?versionId=1", "no query"),
    ("s3://[bucket/d.json", "not a URI"),
    ("", "non-empty"),
])
def test_bad_uris_are_invalid_and_say_why(uri, words):
    err = pytest.raises(IngestError, parse_uri, uri, "images_uri").value
    assert (err.code, err.status, err.field) == ("invalid_uri", 422, "images_uri") and words in err.detail


def test_prefixes_match_whole_segments(tmp_path):
    (tmp_path / "in").mkdir()
    prefixes = parse_prefixes([f"file://{tmp_path}/in", "s3://bucket/team"])
    assert resolve_allowed(f"file://{tmp_path}/in/x.json", prefixes).key == f"{tmp_path}/in/x.json"
    assert resolve_allowed("s3://bucket/team/a/b.parquet", prefixes).key == "team/a/b.parquet"
    assert resolve_allowed("s3://bucket/team", prefixes).key == "team"
    for uri in (f"file://{tmp_path}/inbox/x.json", f"file://{tmp_path}/in/../x.json", "s3://bucket/teammate/x",
                "s3://other/team/x", f"file://localhost{tmp_path}/x.json"):
        err = pytest.raises(IngestError, resolve_allowed, uri, prefixes).value
        assert (err.code, err.status) == ("uri_not_allowed", 403) and SETTING in err.detail, uri


def test_a_link_is_judged_by_where_it_leads(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "secret").write_text("x")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "door").symlink_to(tmp_path / "in", target_is_directory=True)
    prefixes = parse_prefixes([f"file://{tmp_path}/in"])
    assert pytest.raises(IngestError, resolve_allowed, f"file://{tmp_path}/in/link", prefixes).value.code == \
        "uri_not_allowed"
    # a link *to* the allowed folder is fine: what counts is the resolved path
    assert resolve_allowed(f"file://{tmp_path}/door/x", prefixes).key == f"{tmp_path}/in/x"
    assert pytest.raises(IngestError, resolve_allowed, f"file://{tmp_path}/in/x", []).value.detail.endswith(
        "none (the setting is empty))")


def test_the_setting_is_checked_at_load(monkeypatch):
    from service.config import Settings

    monkeypatch.setenv(SETTING, " s3://b/data , file:///srv/datasets ")
    assert Settings().ingest_allowed_prefixes == ["s3://b/data", "file:///srv/datasets"]
    monkeypatch.setenv(SETTING, "http://internal/")
    with pytest.raises(ValueError, match=SETTING):
        Settings()
    monkeypatch.delenv(SETTING)
    assert Settings().ingest_allowed_prefixes == []


def test_local_copy_refuses_links_swapped_in_anywhere_on_the_path(tmp_path):
    """Resolved and checked, then changed: a link as the last component (O_NOFOLLOW), a folder on
    the way made a link (/proc/self/fd no longer the checked path), a link inside a folder."""
    from service.ingest import IngestLimits
    from service.ingest.local_copy import copy_local

    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "d.json").write_text("[]")
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "d.json").write_text("[1]")
    path = str(allowed / "sub" / "d.json")
    got = copy_local(path, "file://" + path, tmp_path / "c0", "uri", IngestLimits())
    assert got.read_text() == "[1]" and got.parent == tmp_path / "c0"
    (allowed / "sub").rename(allowed / "old")
    (allowed / "sub").symlink_to(tmp_path / "secret")  # a folder on the way now leads outside
    err = pytest.raises(IngestError, copy_local, path, "file://" + path, tmp_path / "c1", "uri", IngestLimits()).value
    assert (err.code, err.field) == ("uri_not_allowed", "uri")
    (allowed / "sub").unlink()
    (allowed / "old").rename(allowed / "sub")
    (allowed / "sub" / "d.json").unlink()
    (allowed / "sub" / "d.json").symlink_to(tmp_path / "secret" / "d.json")  # the file itself
    err = pytest.raises(IngestError, copy_local, path, "file://" + path, tmp_path / "c2", "uri", IngestLimits()).value
    assert err.code == "uri_not_allowed" and "link" in err.detail
    folder = str(allowed / "sub")
    err = pytest.raises(IngestError, copy_local, folder, "file://" + folder, tmp_path / "c3", "uri",
                        IngestLimits()).value
    assert err.code == "uri_not_allowed" and "'d.json'" in err.detail
    (allowed / "sub" / "d.json").unlink()
    (allowed / "sub" / "state.json").write_text("{}")
    (allowed / "sub" / "nested").mkdir()
    got = copy_local(folder, "file://" + folder, tmp_path / "c4", "uri", IngestLimits())
    assert sorted(p.name for p in got.iterdir()) == ["state.json"]
    err = pytest.raises(IngestError, copy_local, folder, "file://" + folder, tmp_path / "c5", "uri",
                        IngestLimits(max_dataset_bytes=1)).value
    assert err.code == "dataset_too_large"


def test_an_s3_object_replaced_after_its_listing_is_source_changed(s3_endpoint, monkeypatch, tmp_path):
    """The worker lists (HEAD) then downloads: GetObject carries If-Match on the listed ETag, so a
    bigger object put in between is refused cleanly instead of downloaded past the size checked."""
    from service.ingest import IngestLimits, sources

    for k, v in s3_endpoint.env().items():
        monkeypatch.setenv(k, v)
    bucket = s3_endpoint.new_bucket()
    s3 = s3_endpoint.client()
    s3.put_object(Bucket=bucket, Key="team/d.json", Body=b"[1, 2]")
    s3.put_object(Bucket=bucket, Key="team/hf/state.json", Body=b"{}")
    ref = sources.SourceRef("s3", bucket=bucket, key="team/d.json")
    got = sources.fetch_source(ref, tmp_path / "a", "uri", IngestLimits(), s3_endpoint.url)
    assert got.read_bytes() == b"[1, 2]"
    folder = sources.fetch_source(sources.SourceRef("s3", bucket=bucket, key="team/hf/"), tmp_path / "f", "uri",
                                  IngestLimits(), s3_endpoint.url)
    assert [p.name for p in folder.iterdir()] == ["state.json"]
    objects = sources._s3_objects

    def list_then_replace(*args, **kw):
        listed = objects(*args, **kw)
        s3.put_object(Bucket=bucket, Key="team/d.json", Body=b"[" + b"1, " * 10_000 + b"1]")
        return listed

    monkeypatch.setattr(sources, "_s3_objects", list_then_replace)
    err = pytest.raises(IngestError, sources.fetch_source, ref, tmp_path / "b", "uri", IngestLimits(),
                        s3_endpoint.url).value
    assert (err.code, err.status, err.field) == ("source_changed", 409, "uri")
