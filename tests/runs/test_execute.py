"""``pimc run execute``: a mini-continent end to end, and its refusals.

The mini-continent: three sample tiles in two UTM zones (32TQR and 32TQS in 32N, 33TTL in 33N) of an archive
built up to 30 September, as one run spec over a local STAC API, with outputs in the local S3 store. It is planned
(``pimc run plan``), executed with ``ray job submit`` on a local Ray head, stopped mid-way, resumed, then the
archive grows by the autumn's acquisitions of 33TTL alone and the same spec runs again: only the tiles over 33TTL
get a new version, the others keep their files, items and status objects untouched (their S3 LastModified).
Checked from outside: the bucket's objects (boto3), GDAL reading the tiles, the status layer's GeoJSON and PNG.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import rasterio
import yaml

from pimc_ray.cli import main
from pimc_ray.errors import EXIT_BAD_INPUT
from pimc_ray.local import tile_bbox
from pimc_ray.local.archive import ArchiveSpec, build_archive, extend_archive
from pimc_ray.local.stac_server import LocalStacServer
from pimc_ray.runs.status import COLORS, STATES
from pimc_ray.storage import gdal_s3_env

BIN = Path(sys.executable).parent
BUCKET = "pimc-test"
PREFIX = "mini-continent"
ARCHIVE = ArchiveSpec(tile_size=64, until=dt.date(2022, 9, 30))
ZONE_33 = "33N_"  # tile ids start with their zone


def region(spec: ArchiveSpec) -> dict:
    """The three archive tiles (a little inside their edges) as one MultiPolygon."""
    polygons = []
    for tile in ("32TQR", "32TQS", "33TTL"):
        x0, y0, x1, y1 = (float(v) for v in tile_bbox(tile, spec, (0.05, 0.05, 0.95, 0.95)).split(","))
        polygons.append([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
    return {"type": "MultiPolygon", "coordinates": polygons}


def write_spec(path: Path, stac_url: str, **changes) -> Path:
    spec = {
        "name": "mini-continent",
        "region": {"geojson": region(ARCHIVE)},
        "period": 2022,
        "catalog": {"stac_url": stac_url, "convention": "earth-search"},
        "model": None,
        "products": {"embedding": True},
        "output": f"s3://{BUCKET}/{PREFIX}",
        "tile_size": 32,
        "series": {"window_size": 32},
        "resources": {"workers": 2},
        "budget": {"max_cpu_hours": 1},
    } | changes
    path.write_text(yaml.safe_dump(spec))
    return path


def bucket_keys(prefix: str) -> dict:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def read_json(key: str):
    return json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def statuses() -> dict:
    return {k.rsplit("/", 1)[1].removesuffix(".json"): read_json(k) for k in bucket_keys(f"{PREFIX}/status/")}


def submit(address: str, spec: Path, *, wait: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, *([] if wait else ["--no-wait"])]
    cmd += ["--", str(BIN / "pimc"), "run", "execute", str(spec)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("mini") / "archive", ARCHIVE)


@pytest.mark.slow
def test_mini_continent_plan_execute_kill_resume_extend_rerun(archive, ray_head, s3, tmp_path, capsys):
    server = LocalStacServer(archive.items_path, workdir=tmp_path / "stac").start()
    try:
        spec = write_spec(tmp_path / "spec.yaml", server.url)
        assert main(["run", "plan", str(spec)]) == 0
        plan = read_json(f"{PREFIX}/plan.json")
        planned = {f["properties"]["tile_id"] for f in read_json(f"{PREFIX}/plan_tiles.geojson")["features"]}
        assert len(planned) == plan["tiles"]["count"] >= 9 and {t[:4] for t in planned} == {"32N_", ZONE_33}

        # 1. the first run, stopped once a tile is published
        proc = submit(ray_head, spec, wait=False)
        assert proc.returncode == 0, proc.stderr
        job_id = re.search(r"raysubmit_[A-Za-z0-9]+", proc.stdout + proc.stderr).group(0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not statuses():
            time.sleep(0.5)
        stop = [str(BIN / "ray"), "job", "stop", "--address", ray_head, job_id]
        assert subprocess.run(stop, capture_output=True, text=True, timeout=120).returncode == 0
        early = {t: e for t, e in statuses().items() if e["status"] == "done"}
        assert 1 <= len(early) < len(planned), f"stopped with {len(early)} of {len(planned)} tiles"
        layer = read_json(f"{PREFIX}/status.geojson")  # the live layer, as the stopped run left it
        assert {f["id"] for f in layer["features"]} == planned

        # 2. resumed: the tiles published before are not redone
        again = submit(ray_head, spec)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"{len(early)} unchanged, 0 changed" in again.stdout
        first = statuses()
        assert set(first) == planned and all(
            e["status"] == "done" and e["version"] == 1 for e in first.values()
        )
        assert all(first[t] == e for t, e in early.items())
        objects = bucket_keys(f"{PREFIX}/")
        assert all(f"{PREFIX}/tiles/{t}/v1/embedding.tif" in objects for t in planned)
        check_status_layer({t: "done" for t in planned} | {t: "unchanged" for t in early})

        # 3. the archive grows: autumn acquisitions over 33TTL only; the same spec maps only the tiles there
        server.stop()
        extend_archive(archive.root, dt.date(2022, 12, 31), tiles=["33TTL"])
        server = LocalStacServer(archive.items_path, workdir=tmp_path / "stac2", port=server.port).start()
        before = bucket_keys(f"{PREFIX}/")
        rerun = submit(ray_head, spec)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        after, now = statuses(), bucket_keys(f"{PREFIX}/")
        changed = {t for t in planned if after[t]["version"] == 2}
        assert changed == {t for t in planned if t.startswith(ZONE_33)}, "only the tiles over 33TTL changed"
        for tile in planned - changed:  # untouched: status, item and files are the same objects
            assert after[tile] == first[tile]
            for key in (f"tiles/{tile}/item.json", f"status/{tile}.json", *first[tile]["files"]):
                assert now[f"{PREFIX}/{key}"]["LastModified"] == before[f"{PREFIX}/{key}"]["LastModified"]
        for tile in changed:  # the new version replaced the old one, whose files are gone
            assert after[tile]["inputs"]["items"] > first[tile]["inputs"]["items"]
            assert all("/v2/" in f for f in after[tile]["files"])
            assert not any(f"{PREFIX}/{f}" in now for f in first[tile]["files"])
            item = read_json(f"{PREFIX}/tiles/{tile}/item.json")
            assert item["properties"]["pimc:version"] == 2
            assert item["assets"]["embedding"]["href"] == "./v2/embedding.tif"
            assert item["properties"]["pimc:inputs"] == after[tile]["inputs"]
        check_status_layer({t: "done" for t in changed} | {t: "unchanged" for t in planned - changed})
        collection = read_json(f"{PREFIX}/collection.json")
        assert len([link for link in collection["links"] if link["rel"] == "item"]) == len(planned)
        with rasterio.Env(**gdal_s3_env()):  # the zone 33 mosaic reads the new version
            (tile,) = sorted(changed)[:1]
            with rasterio.open(f"/vsis3/{BUCKET}/{PREFIX}/mosaic_qa_epsg32633.vrt") as m:
                mosaic = m.read(1)
            with rasterio.open(f"/vsis3/{BUCKET}/{PREFIX}/tiles/{tile}/v2/qa.tif") as t:
                assert t.read(1).max() > 0
            assert mosaic.max() == max_qa(changed)
    finally:
        server.stop()


def max_qa(tiles) -> int:
    with rasterio.Env(**gdal_s3_env()):
        out = 0
        for tile in tiles:
            with rasterio.open(f"/vsis3/{BUCKET}/{PREFIX}/tiles/{tile}/v2/qa.tif") as t:
                out = max(out, int(t.read(1).max()))
    return out


def check_status_layer(expected: dict) -> None:
    """The layer's GeoJSON says ``expected`` (tile -> status) and its PNG paints each tile's centre so."""
    layer = read_json(f"{PREFIX}/status.geojson")
    assert {f["id"]: f["properties"]["status"] for f in layer["features"]} == expected
    assert layer["pimc:counts"] == {s: sum(v == s for v in expected.values()) for s in STATES}
    png = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"{PREFIX}/status.png")["Body"].read()
    with rasterio.MemoryFile(png) as memory, memory.open() as src:
        image, colormap = src.read(1), src.colormap(1)
    assert image.shape[1] == 1024 or image.shape[0] == 1024
    seen = {tuple(colormap[v][:3]) for v in np.unique(image) if v}
    assert seen == {COLORS[s] for s in set(expected.values())}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"products": {"embedding": True, "indices": True}}, "spec.products.indices"),
        ({"model": "/nonexistent/model"}, "/nonexistent/model"),
        ({"period": {"start": "2021-01-01", "end": "2021-03-31"}}, "choose a period"),
        ({"budget": {"max_cpu_hours": 1e-6}}, "over budget"),
        ({"region": {"bbox": [10, -75, 12, -70]}}, "Sentinel-2"),
    ],
)
def test_refusals_are_one_line_exit_2_and_write_nothing(stac_api, tmp_path, capsys, changes, words):
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "spec.yaml", stac_api.url, output=str(out), **changes)
    assert main(["run", "execute", str(spec)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()


def test_an_output_holding_another_specs_run_is_refused(stac_api, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(
        json.dumps({"key": "k", "model": "m", "params": {"layout": {"name": "another"}}, "tiles": {}})
    )
    spec = write_spec(tmp_path / "spec.yaml", stac_api.url, output=str(out))
    assert main(["run", "execute", str(spec)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "spec 'another', not 'mini-continent'" in err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
