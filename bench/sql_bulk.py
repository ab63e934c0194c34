"""Writing sample rows to PostgreSQL: SQLAlchemy's executemany INSERT against `bulk_insert`'s COPY.

Makes a scratch database on this machine's PostgreSQL, migrates it, and writes `--rows` sample
rows (about 400 bytes of JSON each) in one transaction both ways, twice, keeping the faster. Prints
one JSON line: rows, seconds and rows per second for each way.

    python bench/sql_bulk.py --rows 200000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete, insert  # noqa: E402

from service.cli.admin import upgrade_database  # noqa: E402
from service.db.bulk import bulk_insert  # noqa: E402
from service.db.models import Dataset, Owner, Sample  # noqa: E402
from service.db.session import session_scope  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args(argv)
    import psycopg

    db = f"adaptinf_bulk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = args.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + db
    try:
        upgrade_database(url)
        with session_scope(url) as s:
            owner = Owner(name="bench")
            s.add(owner)
            s.flush()
            ds = Dataset(owner_id=owner.id, name="d", status="pending", file_blob="0" * 64, file_name="d.jsonl")
            s.add(ds)
            s.flush()
            dataset_id = ds.id
        rows = [{"dataset_id": dataset_id, "position": i, "key": f"s{i}", "content_hash": f"{i:064x}",
                 "record": {"id": f"s{i}", "conversations": [{"from": "human", "value": f"question {i} " * 8},
                                                             {"from": "gpt", "value": f"answer {i} " * 8}]},
                 "messages": [{"role": "user", "content": f"question {i} " * 8},
                              {"role": "assistant", "content": f"answer {i} " * 8}],
                 "image_refs": [], "image_names": [], "skill": None} for i in range(args.rows)]
        ways = {"executemany": lambda s: s.execute(insert(Sample), rows), "copy": lambda s: bulk_insert(s, Sample, rows)}
        best = {}
        for _ in range(2):
            for name, write in ways.items():
                t = time.perf_counter()
                with session_scope(url) as s:
                    write(s)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                with session_scope(url) as s:
                    s.execute(delete(Sample))
        report = {"rows": args.rows, **{f"{k}_s": round(v, 2) for k, v in best.items()},
                  **{f"{k}_rows_per_s": round(args.rows / v) for k, v in best.items()},
                  "speedup": round(best["executemany"] / best["copy"], 2)}
    finally:
        from service.db.session import get_engine

        get_engine(url).dispose()
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
