"""Uploads: Starlette's `request.form()` vs service/api/uploads.py's streaming reader. One JSON line.

Both read the same multipart/form-data body (one file part of `--mb` MiB, no Content-Length,
64 KiB chunks, in process through httpx's ASGI transport) and end with what the upload route
needs: the file at its destination with its size and sha256. `form` is `await request.form()`
then the spooled UploadFile copied and hashed in a thread; `stream` is `receive_multipart`.
Each runs in a fresh process: wall seconds, peak RSS above the idle process (MiB), and the
MiB spooled to the system temp folder before the route saw the file. `--limit-mb` below `--mb`
is the oversized upload: then it reports how much of the body each read before answering 413.
The numbers are in service/api/uploads.py's docstring.

Usage: python bench/uploads.py [--mb 512] [--limit-mb 0]     (e.g. --mb 512 --limit-mb 64)
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastapi import FastAPI, Request

CHUNK = 64 * 1024
BOUNDARY = "benchboundary"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _app(mode: str, dest: Path, limit: int):
    from service.api.errors import ApiProblem, install_error_handlers
    from service.api.uploads import receive_multipart
    from starlette.concurrency import run_in_threadpool

    app = FastAPI()
    install_error_handlers(app)

    def copy_and_hash(upload) -> dict:
        h, size = hashlib.sha256(), 0
        with (dest / "file").open("wb") as out:
            while chunk := upload.file.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ApiProblem(413, "too large", code="upload_too_large")
                h.update(chunk)
                out.write(chunk)
        # SpooledTemporaryFile: in memory up to 1 MiB, then an anonymous file in the temp folder
        spooled = os.fstat(upload.file.fileno()).st_size if upload.file._rolled else 0
        return {"size": size, "sha256": h.hexdigest(), "temp_file_mib": round(spooled / 2**20, 1)}

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        if mode == "form":
            form = await request.form(max_files=2, max_fields=2)
            return await run_in_threadpool(copy_and_hash, form["file"])
        form = await receive_multipart(request, dest, file_fields={"file"}, text_fields=set(), max_file_bytes=limit)
        return {"size": form.files["file"].size, "sha256": form.files["file"].sha256, "temp_file_mib": 0}

    return app


async def _run_one(mode: str, mib: int, limit_mib: int) -> dict:
    import httpx

    dest = Path(tempfile.mkdtemp(prefix="bench-upload-dest-", dir=os.environ.get("BENCH_DEST")))
    limit = (limit_mib or mib * 2) * 1024 * 1024
    app = _app(mode, dest, limit)
    sent = 0
    block = os.urandom(CHUNK)

    async def body():
        nonlocal sent
        head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.jsonl\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield head
        for _ in range(mib * 1024 * 1024 // CHUNK):
            sent += CHUNK
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    idle = _rss_mib()
    t0 = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        r = await client.post("/upload", content=body(),
                              headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    seconds = time.perf_counter() - t0
    shutil.rmtree(dest, ignore_errors=True)
    return {"mode": mode, "status": r.status_code, "seconds": round(seconds, 2),
            "temp_file_mib": r.json().get("temp_file_mib"), "peak_rss_above_idle_mib": round(_rss_mib() - idle, 1), "body_read_mib": round(sent / 2**20, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--limit-mb", type=int, default=0)
    ap.add_argument("--one", choices=["form", "stream"])
    args = ap.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_run_one(args.one, args.mb, args.limit_mb))))
        return
    out = []
    for mode in ("form", "stream"):  # a fresh process each, for a clean peak RSS
        dest = tempfile.mkdtemp(prefix="bench-upload-dest-")
        env = {**os.environ, "BENCH_DEST": dest, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        cmd = [sys.executable, __file__, "--one", mode, "--mb", str(args.mb), "--limit-mb", str(args.limit_mb)]
        out.append(json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout))
        shutil.rmtree(dest, ignore_errors=True)
    print(json.dumps({"mb": args.mb, "limit_mb": args.limit_mb, "results": out}))


if __name__ == "__main__":
    main()
