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
