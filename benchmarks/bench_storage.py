"""Storage libraries against the boto3 store: small JSON objects, one large file, and a listing.

Starts the project's local S3 store (SeaweedFS, :class:`pimc_ray.local.s3_server.LocalS3Server`) and times, in one
process and against the same bucket, boto3 (what ``pimc_ray.storage.S3Store`` used before obstore) and each
candidate library that imports here:

* ``small``: put, then get, ``--small`` JSON objects of about 1 KB one after the other (status files, manifests);
* ``large``: upload, then download, one ``--large-mb`` MB file (a tile's COG; multipart where the library does it);
* ``list``: the keys under a prefix holding ``--keys`` objects (the tile status of a run).

Every put carries a Content-Type, as the store's do. Each figure is the median of ``--repeats`` runs, the libraries
taking turns; the table gives seconds for boto3 and each library's time as a ratio of boto3's (below 1: faster).

fsspec + s3fs cannot live in the project's environment (aiobotocore pins botocore to an older release than the
boto3 there), so ``--python PATH`` also runs this script in another environment holding s3fs, against the same
server, as a child process that measures its own boto3 baseline (the ratios always compare within one process)::

    python benchmarks/bench_storage.py [--small 200] [--large-mb 64] [--keys 1000] [--repeats 3]
    python benchmarks/bench_storage.py --python /tmp/pimc-bench-s3fs/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

BUCKET = "bench"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


class Client(Protocol):
    """What the benchmark asks of a library."""

    name: str

    def put_bytes(self, key: str, data: bytes, media_type: str) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_file(self, local: Path, key: str, media_type: str) -> None: ...
    def get_file(self, key: str, local: Path) -> None: ...
    def count(self, prefix: str) -> int: ...


class Boto3Client:
    """boto3 as the store used it: path-style requests, standard retries, ``upload_file`` (multipart above 8 MB)."""

    name = "boto3"

    def __init__(self) -> None:
        import boto3
        import botocore.config

        config = botocore.config.Config(
            retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
        )
        self.client = boto3.client("s3", config=config)

    def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType=media_type)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def put_file(self, local: Path, key: str, media_type: str) -> None:
        self.client.upload_file(str(local), BUCKET, key, ExtraArgs={"ContentType": media_type})

    def get_file(self, key: str, local: Path) -> None:
        self.client.download_file(BUCKET, key, str(local))

    def count(self, prefix: str) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sum(len(page.get("Contents", [])) for page in pages)


class ObstoreClient:
    """obstore (Rust ``object_store``): settings from the same environment variables."""

    name = "obstore"

    def __init__(self) -> None:
        import obstore.store

        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        self.store = obstore.store.S3Store(
            BUCKET, client_options={"allow_http": endpoint.startswith("http://")}
        )

    def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        import obstore

        obstore.put(self.store, key, data, attributes={"Content-Type": media_type})

    def get_bytes(self, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store, key).bytes())

    def put_file(self, local: Path, key: str, media_type: str) -> None:
        import obstore

        obstore.put(self.store, key, local, attributes={"Content-Type": media_type})

    def get_file(self, key: str, local: Path) -> None:
        import obstore

        with open(local, "wb") as out:
            for chunk in obstore.get(self.store, key).stream(min_chunk_size=8 << 20):
                out.write(chunk)

    def count(self, prefix: str) -> int:
        import obstore

        return sum(len(batch) for batch in obstore.list(self.store, prefix))


class S3fsClient:
    """fsspec + s3fs (aiobotocore), its listing cache emptied before each listing."""

    name = "s3fs"

    def __init__(self) -> None:
        import s3fs

        self.fs = s3fs.S3FileSystem(endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))

    def put_bytes(self, key: str, data: bytes, media_type: str) -> None:
        self.fs.pipe_file(f"{BUCKET}/{key}", data, ContentType=media_type)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{BUCKET}/{key}"))

    def put_file(self, local: Path, key: str, media_type: str) -> None:
        self.fs.put_file(str(local), f"{BUCKET}/{key}", ContentType=media_type)

    def get_file(self, key: str, local: Path) -> None:
        self.fs.get_file(f"{BUCKET}/{key}", str(local))

    def count(self, prefix: str) -> int:
        self.fs.invalidate_cache()
        return len(self.fs.find(f"{BUCKET}/{prefix}"))


CANDIDATES: tuple[type[Any], ...] = (Boto3Client, ObstoreClient, S3fsClient)


def available_clients(only: list[str] | None = None) -> list[Client]:
    """boto3 and every candidate (of ``only``, when given) whose library imports in this environment."""
    clients: list[Client] = []
    for cls in CANDIDATES:
        if only is not None and cls.name != "boto3" and cls.name not in only:
            continue
        try:
            clients.append(cls())
        except ImportError as err:
            print(f"[bench] {cls.name}: not installed here ({err.name})", file=sys.stderr)
    return clients


def _timed(work: Callable[..., object], *args: Any) -> float:
    t0 = time.perf_counter()
    work(*args)
    return time.perf_counter() - t0


def run_once(client: Client, prefix: str, *, blob: bytes, small: int, large: Path, listing: str, keys: int
             ) -> dict[str, float]:  # fmt: skip
    """Seconds of each workload for one library, each result checked."""
    names = [f"{prefix}/small/{i:04d}.json" for i in range(small)]
    seconds = {"small put": _timed(lambda: [client.put_bytes(k, blob, JSON_TYPE) for k in names])}
    got: list[bytes] = []
    seconds["small get"] = _timed(lambda: got.extend(client.get_bytes(k) for k in names))
    assert got == [blob] * small, f"{client.name} read back other bytes"
    key, back = f"{prefix}/large.bin", large.with_name("back.bin")
    seconds["large upload"] = _timed(client.put_file, large, key, BINARY_TYPE)
    seconds["large download"] = _timed(client.get_file, key, back)
    assert back.stat().st_size == large.stat().st_size, f"{client.name} downloaded a short file"
    back.unlink()
    found: list[int] = []
    seconds["list"] = _timed(lambda: found.append(client.count(listing)))
    assert found == [keys], f"{client.name} listed {found} keys, not {keys}"
    return seconds


def measure(clients: list[Client], *, small: int, large_mb: int, keys: int, repeats: int) -> dict[str, Any]:
    """Median seconds of every workload per library: ``{"seconds": {workload: {library: s}}, ...}``."""
    import platform

    run = uuid.uuid4().hex[:8]
    blob = json.dumps({"tile": "32N_0071_0492", "status": "done", "pad": "x" * 960}).encode()  # ~1 KB
    listing = f"{run}/listing/"
    for i in range(keys):  # set-up, not timed
        clients[0].put_bytes(f"{listing}{i:05d}.json", b"{}", JSON_TYPE)
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        large = Path(tmp, "large.bin")
        large.write_bytes(os.urandom(large_mb << 20))
        for rep in range(repeats):
            for client in clients:
                seconds = run_once(
                    client, f"{run}/{client.name}/{rep}", blob=blob, small=small, large=large,
                    listing=listing, keys=keys,
                )  # fmt: skip
                for workload, s in seconds.items():
                    times.setdefault(workload, {}).setdefault(client.name, []).append(s)
    versions = {}
    for module in ("boto3", "botocore", "obstore", "s3fs", "fsspec", "aiobotocore"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            continue
    return {
        "seconds": {w: {n: statistics.median(s) for n, s in per.items()} for w, per in times.items()},
        "versions": versions,
        "python": platform.python_version(),
    }


def table(results: list[dict[str, Any]], workloads: dict[str, str]) -> str:
    """A markdown table: boto3's seconds (of the first process) and each library's ratio to its process's boto3."""
    names = [n for r in results for n in r["seconds"]["list"] if n != "boto3"]
    lines = [
        "| workload | boto3 (s) | " + " | ".join(f"{n} / boto3" for n in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for workload, label in workloads.items():
        cells = [f"{results[0]['seconds'][workload]['boto3']:.3f}"]
        for r in results:
            per = r["seconds"][workload]
            cells += [f"{per[n] / per['boto3']:.2f}" for n in per if n != "boto3"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=200, help="small JSON objects put then got")
    p.add_argument("--large-mb", type=int, default=64, help="size of the large file in MB")
    p.add_argument("--keys", type=int, default=1000, help="keys under the listed prefix")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--python", help="also run in this interpreter's environment (e.g. one with s3fs)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # libraries to measure here (and boto3); print JSON
    args = p.parse_args()
    sizes = {"small": args.small, "large_mb": args.large_mb, "keys": args.keys, "repeats": args.repeats}
    if args.child:
        print(json.dumps(measure(available_clients(args.child.split(",")), **sizes)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pimc_ray.local.s3_server import LocalS3Server

    results = []
    with LocalS3Server((BUCKET,)) as server:
        os.environ.update(server.env())
        results.append(measure(available_clients(), **sizes))
        if args.python:
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]
            here = ",".join(results[0]["seconds"]["list"])
            rest = ",".join(c.name for c in CANDIDATES if c.name not in here.split(","))
            proc = subprocess.run(
                [args.python, __file__, f"--child={rest}", *flags], capture_output=True, text=True, check=True
            )
            results.append(json.loads(proc.stdout))
    workloads = {
        "small put": f"put {args.small} JSON objects of ~1 KB",
        "small get": f"get {args.small} JSON objects of ~1 KB",
        "large upload": f"upload a {args.large_mb} MB file",
        "large download": f"download a {args.large_mb} MB file",
        "list": f"list {args.keys} keys",
    }
    print(table(results, workloads))
    for r in results:
        print(f"python {r['python']}: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
