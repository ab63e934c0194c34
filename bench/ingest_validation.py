"""Upload validation, before and after it ran once: what the request and the ingest worker each
spend on one dataset of `--n` samples with an image each (JSONL + a .zip of real-photo crops).

before: the request ran the full check (every record, every image extracted and decoded), then
        the worker ran it again, keeping every sample in memory.
after:  the request runs the cheap checks (records + the archive's listing, no image touched);
        the worker decodes each image once, keeps no sample and reads the records again to write
        them (the database insert itself is not timed, in either).
Best of `--repeat` runs, seconds. The figures are in service/ingest/upload_checks.py's docstring.

Usage: python bench/ingest_validation.py [--n 2000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

# the repository first and tests/ (for its data generator) last: tests/service must not hide service/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(min(times), 3)


def main() -> None:
    import datagen
    from service.ingest import IngestLimits, validate_upload
    from service.ingest.formats import content_hash
    from service.ingest.upload_checks import check_upload

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        dataset, archive = datagen.write_llava_dataset(tmp / "in", args.n, fmt="jsonl")
        limits = IngestLimits()
        work = iter(range(10**6))

        def wd() -> Path:
            return tmp / f"w{next(work)}"

        before_request = _best(lambda: validate_upload(dataset, archive, wd(), limits, image_mode="check",
                                                       keep_samples=False), args.repeat)
        after_request = _best(lambda: check_upload(dataset, archive, wd(), limits), args.repeat)
        before_worker = _best(lambda: validate_upload(dataset, archive, wd(), limits, image_mode="keep"), args.repeat)

        def worker() -> None:  # as workers/tasks/ingest.py now: samples not kept, read again to write
            got = validate_upload(dataset, archive, wd(), limits, image_mode="keep", keep_samples=False)
            for s in got.reader.samples():
                content_hash(s, [img.sha256 for img in got.images_of(s)])

        after_worker = _best(worker, args.repeat)
        print(json.dumps({"samples": args.n, "archive_mb": round(archive.stat().st_size / 2**20, 1),
                          "before": {"request_s": before_request, "worker_s": before_worker,
                                     "total_s": round(before_request + before_worker, 3)},
                          "after": {"request_s": after_request, "worker_s": after_worker,
                                    "total_s": round(after_request + after_worker, 3)}}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
