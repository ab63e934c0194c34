"""The blob stores side by side: the local store and the S3 store on an S3 endpoint. One JSON line.

Times a big put (`put_file(move=True)`, multipart above 8 MiB), a first `verify` on a machine
that never saw the blob (download + hash into the cache), `materialize` right after (the cache's
copy), many small puts (images) and small `open().read()`s. Without `--endpoint` it starts moto's
server (the tests' S3 endpoint): a local process, so the figures show the client's own costs, not
a network's.

Usage: python bench/blob_stores.py [--big-mb 256] [--small 300] [--endpoint http://127.0.0.1:9000 --bucket b]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _time(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 3)


def measure(make_store, big_mb: int, small: int, work: Path) -> dict[str, float]:  # noqa: ANN001
    store = make_store("writer")
    big = work / "big.bin"
    with big.open("wb") as f:
        for _ in range(big_mb):
            f.write(os.urandom(2**20))
    out: dict[str, float] = {}
    ref = None

    def put_big() -> None:
        nonlocal ref
        ref = store.put_file(big, move=True)

    out["put_big_s"] = _time(put_big)
    reader = make_store("reader")  # another machine: an empty cache
    out["verify_first_s"] = _time(lambda: reader.verify(ref.sha256))
    out["verify_again_s"] = _time(lambda: reader.verify(ref.sha256))
    out["materialize_after_verify_s"] = _time(lambda: reader.materialize(ref.sha256))
    datas = [os.urandom(20_000) for _ in range(small)]
    refs = []
    out["small_puts_per_s"] = round(small / _time(lambda: refs.extend(store.put_bytes(d) for d in datas)), 1)

    def read_all() -> None:
        for r in refs:
            with reader.open(r.sha256) as f:
                f.read()

    out["small_reads_per_s"] = round(small / _time(read_all), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--endpoint", default="")
    ap.add_argument("--bucket", default="")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from core.blobs import LocalBlobStore
    from core.blobs.s3 import S3BlobStore

    result: dict[str, object] = {"big_mb": args.big_mb, "small": args.small}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result["local"] = measure(lambda _name: LocalBlobStore(work / "blobs"), args.big_mb, args.small, work)
        server = None
        if not args.endpoint:
            from s3tools import start_moto_server

            server = start_moto_server()
            endpoint = next(server)
            for name, value in endpoint.env().items():
                os.environ.setdefault(name, value)
            url, bucket = endpoint.url, endpoint.new_bucket()
        else:
            url, bucket = args.endpoint, args.bucket
        try:
            result["s3"] = measure(lambda name: S3BlobStore(f"s3://{bucket}/bench", endpoint_url=url,
                                                            cache_dir=work / f"cache-{name}"),
                                   args.big_mb, args.small, work)
        finally:
            if server is not None:
                server.close()
    result["endpoint"] = args.endpoint or "moto_server (local process)"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
