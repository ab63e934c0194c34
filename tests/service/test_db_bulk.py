"""bulk_insert: COPY on PostgreSQL and executemany on SQLite write the same rows, in the caller's transaction."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from service.db.bulk import bulk_insert
from service.db.models import Dataset, Owner, Sample
from service.db.session import session_scope


@pytest.fixture
def dataset_id(database_url: str) -> str:
    with session_scope(database_url) as s:
        owner = Owner(name="bulk")
        s.add(owner)
        s.flush()
        ds = Dataset(owner_id=owner.id, name="d", status="pending", file_blob="0" * 64, file_name="d.json")
        s.add(ds)
        s.flush()
        return ds.id


def _rows(dataset_id: str, n: int) -> list[dict]:
    return [{"dataset_id": dataset_id, "position": i, "key": f"k{i}\t\\ \"q\"", "content_hash": f"{i:064d}",
             "record": {"id": i, "text": "tab\there, newline\nthere, unicode é 😀, null \\u0000 escaped", "n": None},
             "messages": [{"role": "user", "content": f"q{i}"}], "image_refs": [], "image_names": [],
             "skill": None if i % 2 else "s"} for i in range(n)]


def test_rows_round_trip_exactly(database_url: str, dataset_id: str) -> None:
    rows = _rows(dataset_id, 500)
    with session_scope(database_url) as s:
        assert bulk_insert(s, Sample, rows) == 500
    with session_scope(database_url) as s:
        got = s.scalars(select(Sample).where(Sample.dataset_id == dataset_id).order_by(Sample.position)).all()
    assert len(got) == 500 and len({g.id for g in got}) == 500
    for g, r in zip(got, rows):
        assert (g.key, g.content_hash, g.record, g.messages, g.skill) == (r["key"], r["content_hash"], r["record"],
                                                                          r["messages"], r["skill"])


def test_rows_roll_back_with_the_transaction(database_url: str, dataset_id: str) -> None:
    with pytest.raises(RuntimeError), session_scope(database_url) as s:
        bulk_insert(s, Sample, _rows(dataset_id, 10))
        raise RuntimeError("the caller fails after the insert")
    with session_scope(database_url) as s:
        assert s.scalars(select(Sample.id).where(Sample.dataset_id == dataset_id)).all() == []
    with session_scope(database_url) as s:
        assert bulk_insert(s, Sample, []) == 0
