"""A run's metadata reads: its tiles' status objects (every rerun's start) and items (every run's end).

Starts the project's local S3 store (SeaweedFS), puts ``--tiles`` status objects (about 1 KB) and item.json files
(a published tile's item, about ``--item-kb`` KB) under a run prefix, and times, in one process against the same
bucket, the reads one after the other (what :meth:`RunManifest.load` and the end of a run did before) against
:meth:`~pimc_ray.storage.Store.get_json_many` (``--threads`` requests at a time), and how many bytes of items the
driver then holds: whole, or all but the first slimmed (:func:`~pimc_ray.mapping.maps.run_items`). Each figure is
the median of ``--repeats`` runs, the two ways taking turns::

    python benchmarks/bench_run_metadata.py [--tiles 2000] [--item-kb 30] [--threads 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BUCKET = "bench"


def item(tile_id: str, kb: int) -> dict:
    """A tile item of about ``kb`` KB: the fields the run-level outputs read, and band statistics as padding."""
    bands = [{"statistics": {"mean": 0.1 * i, "stddev": 0.01 * i, "minimum": 0.0, "maximum": 1.0}}
             for i in range(kb * 1024 // 90)]  # fmt: skip
    thumb = {
        "href": "./v1/quicklook.png",
        "roles": ["thumbnail"],
        "proj:transform": [40.0, 0, 0, 0, -40.0, 0],
    }
    return {
        "bbox": [10.0, 45.0, 10.1, 45.1],
        "collection": "pimc-maps",
        "properties": {
            "start_datetime": "2022-01-01T00:00:00Z",
            "end_datetime": "2022-12-31T23:59:59Z",
            "pimc:tile": tile_id,
            "proj:code": "EPSG:32632",
            "proj:bbox": [0.0, 0.0, 10240.0, 10240.0],
            "proj:transform": [10.0, 0, 0, 0, -10.0, 10240.0],
        },
        "assets": {"embedding": {"href": "./v1/embedding.tif", "raster:bands": bands}, "thumbnail": thumb},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=2000)
    p.add_argument("--item-kb", type=int, default=30)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pimc_ray.io.manifest import STATUS
    from pimc_ray.local.s3_server import LocalS3Server
    from pimc_ray.mapping.maps import run_items
    from pimc_ray.parallel import in_order
    from pimc_ray.storage import open_store

    ids = [f"32N_{i:04d}_0001" for i in range(args.tiles)]
    with LocalS3Server((BUCKET,)) as server:
        os.environ.update(server.env())
        store = open_store(f"s3://{BUCKET}/run")
        status = {
            "status": "done",
            "version": 1,
            "files": ["tiles/x/v1/embedding.tif"] * 8,
            "pixels": 1 << 20,
        }
        t0 = time.perf_counter()
        list(in_order(lambda t: store.put_json(status, f"{STATUS}{t}.json"), ids, args.threads))
        list(
            in_order(
                lambda t: store.put_json(item(t, args.item_kb), f"tiles/{t}/item.json"), ids, args.threads
            )
        )
        print(f"put {2 * args.tiles} objects in {time.perf_counter() - t0:.1f} s", flush=True)
        status_keys = [f"{STATUS}{t}.json" for t in ids]
        item_keys = [f"tiles/{t}/item.json" for t in ids]
        ways = {
            "status, one after the other": lambda: [store.get_json(k) for k in status_keys],
            "status, get_json_many": lambda: list(store.get_json_many(status_keys, threads=args.threads)),
            "items, one after the other": lambda: [store.get_json(k) for k in item_keys],
            "items, run_items": lambda: run_items(store, ids),
        }
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        held: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, fn in ways.items():
                t0 = time.perf_counter()
                out = fn()
                seconds[name].append(time.perf_counter() - t0)
                held[name] = sum(len(json.dumps(o)) for o in out)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    print(f"| reads of {args.tiles} tiles | seconds | ratio | objects per second | bytes held |")
    print("|---|---:|---:|---:|---:|")
    for name, s in median.items():
        base = median[name.split(",")[0] + ", one after the other"]
        print(f"| {name} | {s:.2f} | {s / base:.2f} | {args.tiles / s:,.0f} | {held[name] / 1e6:.1f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
