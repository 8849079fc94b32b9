"""End to end: the mapping jobs submitted with `ray job submit` to a local Ray head, writing to a local S3 bucket
(and in-process, to a folder, where a test needs no cluster).

Checked against independent references: GDAL reading the COGs back from the bucket (/vsis3/), rio-cogeo's
validator, stac-validator, the generator's ground-truth labels, and a single-tile run of the same pixels.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import boto3
import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.warp import Resampling, reproject
from rio_cogeo.cogeo import cog_validate

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.catalogs import BANDS
from pimc_ray.local import demo_aoi, demo_train_aoi, free_port
from pimc_ray.local.archive import CLASSES
from pimc_ray.mapping.heads import load_head
from pimc_ray.scratch import SCRATCH
from pimc_ray.storage import gdal_s3_env, open_store
from tests.specs import TEST_SPEC
from tests.stac_validation import validate

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"
BIN = Path(sys.executable).parent
BUCKET = "pimc-test"


def job_args(stac_url, out, **overrides):
    args = {
        "--aoi": demo_aoi(TEST_SPEC),
        "--start": "2022-01-01",
        "--end": "2022-12-31",
        "--stac-url": stac_url,
        "--out": str(out),
        "--tile-size": "64",
        "--window-size": "64",
    }
    args.update(overrides)
    return [str(v) for kv in args.items() for v in kv if v is not None]


def run_job(args, job="embed_aoi.py"):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(JOBS / job), *args], capture_output=True, text=True, env=env, timeout=600
    )


def submit_job(address, args, job="embed_aoi.py", *, wait=True):
    """`ray job submit` of a job; with wait, the job's exit code becomes the command's."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address]
    cmd += [] if wait else ["--no-wait"]
    cmd += ["--", sys.executable, str(JOBS / job), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def bucket_keys(prefix):
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def read_json(key):
    return json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())


def check_stac(out):
    """A run's items and collection in a local folder, validated against the official schemas, each asset's size
    and checksum checked against its bytes (hashlib), each COG's bands' statistics against NumPy on what GDAL
    reads back, and the quicklooks against the COGs (:func:`check_quicklooks`); returns the items."""
    items = []
    for path in sorted((out / "tiles").glob("*/item.json")):
        valid, messages = validate(path)
        assert valid, messages
        item = json.loads(path.read_text())
        for asset in (a for a in item["assets"].values() if a["href"].startswith("./")):
            data = (path.parent / asset["href"]).read_bytes()
            assert (asset["file:size"], asset["file:checksum"]) == (
                len(data),
                f"1220{hashlib.sha256(data).hexdigest()}",
            )
            if "thumbnail" in asset["roles"]:
                continue
            with rasterio.open(path.parent / asset["href"]) as src:
                bands, nodata = src.read().astype(np.float64), src.nodata
            for band, meta in zip(bands, asset["raster:bands"], strict=True):
                ok = band[~np.isnan(band)] if np.isnan(nodata) else band[band != nodata]
                stats = meta["statistics"]
                assert stats["valid_percent"] == pytest.approx(100 * ok.size / band.size)
                if ok.size:
                    assert (stats["minimum"], stats["maximum"]) == (ok.min(), ok.max())
                    assert (stats["mean"], stats["stddev"]) == pytest.approx((ok.mean(), ok.std()), rel=1e-9)
        items.append(item)
    valid, messages = validate(out / "collection.json")
    assert valid, messages
    check_quicklooks(lambda key: (out / key).read_bytes(), str(out), items)
    return items


def read_png(data):
    """``(bands, palette or None)`` of PNG bytes, as GDAL reads them."""
    with warnings.catch_warnings(), MemoryFile(data) as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with memory.open(driver="PNG") as src:
            return src.read(), (src.colormap(1) if src.colorinterp[0].name == "palette" else None)


def check_quicklooks(get, root, items):
    """Every tile's quicklooks against its COGs read back by GDAL (``root``: a folder or ``/vsis3/`` prefix; ``get``
    reads a key's bytes), and the run's quicklooks against the tiles' (one zone: an exact composition) and the
    class mosaic. Tiles of at most 512 pixels: a quicklook pixel is a COG pixel."""
    collection = json.loads(get("collection.json"))
    for item in items:
        tile = item["properties"]["pimc:tile"]
        thumbnails = {k: a for k, a in item["assets"].items() if "thumbnail" in a["roles"]}
        assert ("thumbnail" in thumbnails) == ("embedding" in item["assets"])
        assert ("thumbnail_classes" in thumbnails) == ("classes" in item["assets"])
        for key, asset in thumbnails.items():
            assert asset["type"] == "image/png" and asset["roles"] == ["thumbnail"]
            assert asset["proj:shape"] == item["properties"]["proj:shape"]  # no downsampling at these sizes
            assert asset["href"].rsplit("/", 1)[0] == item["assets"]["qa"]["href"].rsplit("/", 1)[0]  # v<N>/
            image, palette = read_png(get(f"tiles/{tile}/{asset['href'].removeprefix('./')}"))
            assert image.shape[1:] == tuple(asset["proj:shape"])
            product = "embedding" if key == "thumbnail" else "classes"
            with rasterio.Env(**gdal_s3_env()):
                with rasterio.open(f"{root}/tiles/{tile}/{item['assets'][product]['href'][2:]}") as src:
                    cog, colormap = src.read(), (src.colormap(1) if product == "classes" else None)
            if product == "embedding":  # RGBA: transparent exactly where the embedding is nodata
                assert palette is None and image.shape[0] == 4
                nodata = np.isnan(cog).any(axis=0)
                np.testing.assert_array_equal(image[3] == 0, nodata)
                assert (image[3][~nodata] == 255).all() and (image[:3, nodata] == 0).all()
                assert len(np.unique(image[:3, ~nodata].reshape(3, -1), axis=1).T) > 10  # not one colour
            else:  # palette: the class ids of the COG, in the COG's (the head's) colours; nodata transparent
                assert image.shape[0] == 1 and palette[0][3] == 0
                np.testing.assert_array_equal(image[0], cog[0])
                rng = np.random.default_rng(0)
                for r, c in zip(*(rng.integers(0, n, 50) for n in image.shape[1:]), strict=True):
                    assert palette[int(image[0, r, c])] == colormap[int(cog[0, r, c])], (tile, r, c)
    for key in {k for i in items for k, a in i["assets"].items() if "thumbnail" in a["roles"]}:
        asset = collection["assets"][key]
        name = asset["href"].removeprefix("./")
        assert name == items[0]["assets"][key]["href"].rsplit("/", 1)[1] and asset["roles"] == ["thumbnail"]
        run, palette = read_png(get(name))
        assert max(run.shape[1:]) <= 1024
        with rasterio.Env(**gdal_s3_env()):  # the run's grid is the mosaic's (one zone, no downsampling)
            product = "embedding" if key == "thumbnail" else "classes"
            mosaic = next(n for n in collection["assets"] if n.startswith(f"mosaic_{product}_"))
            with rasterio.open(f"{root}/{collection['assets'][mosaic]['href'][2:]}") as src:
                assert run.shape[1:] == src.shape
                left, top = src.bounds.left, src.bounds.top
                if product == "classes":
                    np.testing.assert_array_equal(run[0], src.read(1))
        for item in items:  # each tile's quicklook is where the tile is
            tile = item["properties"]["pimc:tile"]
            image, _ = read_png(get(f"tiles/{tile}/{item['assets'][key]['href'][2:]}"))
            transform = item["assets"][key]["proj:transform"]
            col, row = round((transform[2] - left) / transform[0]), round((top - transform[5]) / transform[0])
            part = run[:, row : row + image.shape[1], col : col + image.shape[2]]
            np.testing.assert_array_equal(part, image, err_msg=f"{key} of {tile} in the run's quicklook")
        if key == "thumbnail_classes":
            legend = get(collection["assets"]["legend_classes"]["href"][2:]).decode()
            classes = asset["classification:classes"]
            assert all(c["title"] in legend for c in classes if not c.get("nodata"))


def ground_truth_on(src, archive):
    truth = np.zeros((src.height, src.width), np.uint8)
    for path in archive.label_paths.values():
        with rasterio.open(path) as lab:
            part = np.zeros_like(truth)
            reproject(
                lab.read(1),
                part,
                src_transform=lab.transform,
                src_crs=lab.crs,
                src_nodata=0,
                dst_transform=src.transform,
                dst_crs=src.crs,
                dst_nodata=0,
                resampling=Resampling.nearest,
            )
            truth = np.where(truth == 0, part, truth)
    return truth


@pytest.fixture(scope="module")
def s3_run(ray_head, stac_api, s3):
    """The embedding job with a head fit on a held-out tile, submitted to Ray, writing to the local bucket."""
    prefix = "e2e"
    proc = submit_job(
        ray_head,
        job_args(stac_api.url, f"s3://{BUCKET}/{prefix}", **{"--head-train-aoi": demo_train_aoi(TEST_SPEC)}),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return prefix, proc.stdout


@pytest.mark.slow
def test_tiles_in_the_bucket_are_valid_cogs_gdal_reads_back(s3_run):
    prefix, stdout = s3_run
    assert "summary:" in stdout and "pixels/s" in stdout and "[tiles]" in stdout
    manifest = read_json(f"{prefix}/manifest.json")
    tiles = sorted(manifest["tiles"])
    assert len(tiles) >= 4 and all(e["status"] == "done" for e in manifest["tiles"].values())
    keys = bucket_keys(prefix)
    with rasterio.Env(**gdal_s3_env()):
        for tile in tiles:
            for product, count, dtype in (
                ("embedding", 64, "float32"),
                ("classes", 2, "uint8"),
                ("qa", 1, "uint16"),
            ):
                key = f"{prefix}/tiles/{tile}/v1/{product}.tif"
                assert key in keys
                assert cog_validate(f"/vsis3/{BUCKET}/{key}", quiet=True)[0], key
                with rasterio.open(f"/vsis3/{BUCKET}/{key}") as src:
                    assert (src.count, src.dtypes[0], src.crs.to_epsg()) == (count, dtype, 32632)
                    assert src.nodata is not None and src.descriptions[0]
                    assert src.tags()["pimc_tile"] == tile and "random-init" in src.tags()["pimc_weights"]


@pytest.mark.slow
def test_stac_items_and_collection_validate(s3_run, tmp_path):
    prefix, _ = s3_run
    manifest = read_json(f"{prefix}/manifest.json")
    head = load_head(open_store(f"s3://{BUCKET}/{prefix}"), "head")  # the head the run fit and used
    items = []
    for tile in manifest["tiles"]:
        path = tmp_path / f"{tile}.json"
        item = read_json(f"{prefix}/tiles/{tile}/item.json")
        assert item["properties"]["pimc:model"] == manifest["model"]
        assert item["properties"]["processing:software"]["pimc-ray"]
        path.write_text(json.dumps(item))
        valid, messages = validate(path)
        assert valid, messages
        for asset in (a for a in item["assets"].values() if a["href"].startswith("./")):
            key = f"{prefix}/tiles/{tile}/{asset['href'].removeprefix('./')}"
            data = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert (asset["file:size"], asset["file:checksum"]) == (
                len(data),
                f"1220{hashlib.sha256(data).hexdigest()}",
            )
        classes = item["assets"]["classes"]["raster:bands"][0]["classification:classes"]
        assert {c["value"]: c["title"] for c in classes if not c.get("nodata")} == head.class_names
        legend = item["assets"]["thumbnail_classes"]["classification:classes"]  # the class quicklook's legend
        assert [{k: c[k] for k in ("value", "title", "color_hint") if k in c} for c in legend] == [
            {k: c[k] for k in ("value", "title", "color_hint") if k in c} for c in classes
        ]
        items.append(item)
    path = tmp_path / "collection.json"
    collection = read_json(f"{prefix}/collection.json")
    path.write_text(json.dumps(collection))
    valid, messages = validate(path)
    assert valid, messages
    assert set(collection["item_assets"]) == {"embedding", "classes", "qa", "thumbnail", "thumbnail_classes"}
    assert {"thumbnail", "thumbnail_classes", "legend_classes"} <= set(collection["assets"])

    def get(key):
        return boto3.client("s3").get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()

    check_quicklooks(get, f"/vsis3/{BUCKET}/{prefix}", items)


@pytest.mark.slow
def test_mosaic_covers_the_aoi_and_classifies_above_chance(s3_run, sample_archive):
    prefix, _ = s3_run
    aoi_utm = load_aoi(demo_aoi(TEST_SPEC)).to_crs(32632)
    with rasterio.Env(**gdal_s3_env()):
        with rasterio.open(f"/vsis3/{BUCKET}/{prefix}/mosaic_embedding_epsg32632.vrt") as emb:
            left, bottom, right, top = emb.bounds
            xmin, ymin, xmax, ymax = aoi_utm.bounds
            assert left <= xmin and bottom <= ymin and right >= xmax and top >= ymax
            window = emb.window(xmin, ymin, xmax, ymax)
            assert np.isfinite(emb.read(1, window=window)).mean() > 0.8
        with rasterio.open(f"/vsis3/{BUCKET}/{prefix}/mosaic_classes_epsg32632.vrt") as cls_src:
            assert cls_src.colormap(1)[1][:3] == CLASSES[1].colour
            classes = cls_src.read(1)
            confidence = cls_src.read(2)
            truth = ground_truth_on(cls_src, sample_archive)
    both = (classes > 0) & (truth > 0)
    assert ((confidence[classes > 0] > 0) & (confidence[classes > 0] <= 100)).all()
    accuracy = float((classes[both] == truth[both]).mean())
    majority = max(np.bincount(truth[both]) / both.sum())
    assert accuracy > max(0.5, majority + 0.25), f"accuracy {accuracy:.3f}, majority class {majority:.3f}"


@pytest.mark.slow
def test_mosaic_edges_equal_a_single_tile_run(s3_run, stac_api, tmp_path):
    prefix, _ = s3_run
    out = tmp_path / "single"
    proc = run_job(
        job_args(stac_api.url, out, **{"--tile-size": "1024", "--window-size": "128", "--workers": "0"})
    )
    assert proc.returncode == 0, proc.stderr
    (single_tile,) = json.loads((out / "manifest.json").read_text())["tiles"]
    with (
        rasterio.Env(**gdal_s3_env()),
        rasterio.open(f"/vsis3/{BUCKET}/{prefix}/mosaic_embedding_epsg32632.vrt") as m,
    ):
        mosaic, bounds = m.read(), m.bounds
        tile_edges = [i for i in range(1, m.width) if i % 64 == 0]
    with rasterio.open(out / "tiles" / single_tile / "v1" / "embedding.tif") as big:
        same = big.read(window=big.window(*bounds))
    assert mosaic.shape == same.shape and tile_edges
    np.testing.assert_array_equal(np.isnan(mosaic), np.isnan(same))
    for col in tile_edges:  # the columns on both sides of every tile edge
        np.testing.assert_allclose(
            mosaic[:, :, col - 1 : col + 1], same[:, :, col - 1 : col + 1], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(mosaic, same, rtol=1e-5, atol=1e-5, equal_nan=True)


PATCH_ENCODER = {
    "name": "rsi-cnn",
    "params": {"in_channels": 10, "patch_size": 5, "widths": [8], "embed_dim": 8},
}
JOINT_ENCODER = {
    "name": "pimc-joint",
    "params": {
        "rp": {"name": "rp-resnet", "params": {"widths": [8], "embed_dim": 4}},
        "rsi": {"name": "rsi-cnn", "params": {**PATCH_ENCODER["params"], "embed_dim": 4}},
    },
}


#: The default export's shape: the index series beside the RP and image-patch encoders.
DEFAULT_SHAPE_ENCODER = {
    "name": "pimc-concat",
    "params": {
        "parts": [
            {"name": "index-series", "params": {"steps": 36}},
            {"name": "rp-resnet", "params": {"widths": [8], "embed_dim": 4}},
            {"name": "rsi-cnn", "params": {**PATCH_ENCODER["params"], "embed_dim": 4}},
        ]
    },
}


@pytest.mark.parametrize(
    "encoder",
    [PATCH_ENCODER, JOINT_ENCODER, DEFAULT_SHAPE_ENCODER],
    ids=["rsi-cnn", "pimc-joint", "pimc-concat"],
)
def test_patch_encoder_mosaic_edges_equal_a_single_tile_run(encoder, sample_archive, tmp_path, capsys):
    """An rsi-cnn (or joint, or the default concat) checkpoint mapped over four 64-pixel tiles equals a
    single-tile run of the same pixels: windows are read grown by the halo, so pixels along tile (and window)
    edges get the same patches as interior ones."""
    from pyproj import Transformer

    from pimc_ray.cli.jobs import embed_main
    from pimc_ray.models import EncoderConfig, save_checkpoint

    config = EncoderConfig.from_dict({**encoder, "seed": 5})
    ckpt = save_checkpoint(tmp_path / "encoder", config.build(), config)  # randomly initialised
    items = [i for i in sample_archive.read_items("sentinel-2-l2a") if "_32TQS_" in i["id"]]
    snapshot = tmp_path / "items.ndjson"
    snapshot.write_text("".join(json.dumps(i) + "\n" for i in items))
    # 40 x 40 pixels around the corner of four 64-pixel tiles (x 728 960, y 5 041 920), inside archive tile 32TQS
    to_lonlat = Transformer.from_crs(32632, 4326, always_xy=True)
    (lon0, lon1), (lat0, lat1) = to_lonlat.transform([728_760, 729_160], [5_041_720, 5_042_120])
    aoi = f"{min(lon0, lon1)},{min(lat0, lat1)},{max(lon0, lon1)},{max(lat0, lat1)}"

    def embed(out, tile_size, window_size):
        overrides = {"--aoi": aoi, "--snapshot": str(snapshot), "--checkpoint": str(ckpt), "--workers": "0"}
        sizes = {"--tile-size": tile_size, "--window-size": window_size}
        args = job_args("http://127.0.0.1:9", out, **overrides, **sizes)  # items from the snapshot: no search
        assert embed_main(args) == 0, capsys.readouterr().err
        return json.loads((out / "manifest.json").read_text())

    tiled = embed(tmp_path / "tiled", "64", "32")  # window edges inside the tiles too
    patches = {"bands": list(BANDS), "composite": "median", "halo": 2}
    assert len(tiled["tiles"]) == 4 and tiled["params"].get("patches") == (patches if config.halo else None)
    (single_tile,) = embed(tmp_path / "single", "256", "128")["tiles"]
    with rasterio.open(tmp_path / "tiled" / "mosaic_embedding_epsg32632.vrt") as m:
        mosaic, bounds = m.read(), m.bounds
    with rasterio.open(tmp_path / "single" / "tiles" / single_tile / "v1" / "embedding.tif") as big:
        same = big.read(window=big.window(*bounds))
        assert json.loads(big.tags()["pimc_encoder"])["name"] == encoder["name"]
        descriptions = big.descriptions
    # the STAC item names the embedding, its parts included; the bands say which part each dimension is
    item = json.loads((tmp_path / "single" / "tiles" / single_tile / "item.json").read_text())
    expected = {
        "rsi-cnn": ("rsi-cnn", ["emb_00"]),
        "pimc-joint": ("pimc-joint(rp-resnet, rsi-cnn)", ["rp_00", "rsi_00"]),
        "pimc-concat": (
            "pimc-concat(index-series, rp-resnet, rsi-cnn)",
            ["NDVI_2022-01-06", "rp_00", "rsi_00"],
        ),
    }
    name, first_bands = expected[encoder["name"]]
    assert item["properties"]["pimc:encoder"] == name
    # the items and collection validate, and the mlm extension names the checkpoint's weights by their hash
    assert check_stac(tmp_path / "single") == [item]
    weights = Path(ckpt, "model.safetensors").read_bytes()
    assert item["assets"]["model"]["file:checksum"] == f"1220{hashlib.sha256(weights).hexdigest()}"
    assert item["properties"]["mlm:name"] == encoder["name"]
    assert item["properties"]["mlm:architecture"] == name
    assert item["properties"]["mlm:output"][0]["result"]["shape"] == [-1, config.build().embed_dim]
    assert len(item["properties"]["mlm:input"]) == name.count(",") + 1  # one input per part
    assert descriptions[0] == first_bands[0] and set(first_bands) <= set(descriptions)
    assert len(descriptions) == len(set(descriptions)) == config.build().embed_dim
    assert mosaic.shape == same.shape == (config.build().embed_dim, 128, 128)
    np.testing.assert_array_equal(np.isnan(mosaic), np.isnan(same))
    for edge in (mosaic[:, :, 63:65], mosaic[:, 63:65, :]):  # the pixels on both sides of the tile edges
        assert np.isfinite(edge).all(axis=0).sum() >= 2 * 30  # embedded along the AOI's ~40 pixels
    np.testing.assert_allclose(mosaic, same, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.slow
def test_killed_job_resumes_and_writes_every_tile_once(ray_head, stac_api, s3):
    prefix = "resume"
    args = job_args(stac_api.url, f"s3://{BUCKET}/{prefix}", **{"--window-size": "32"})
    proc = submit_job(ray_head, args, wait=False)
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", proc.stdout + proc.stderr).group(0)

    def finished_tiles() -> dict:
        """The tiles whose status object says done: a tile's one small put, after its files."""
        statuses = {k: read_json(k) for k in bucket_keys(f"{prefix}/status/")}
        return {
            k.rsplit("/", 1)[1].removesuffix(".json"): e for k, e in statuses.items() if e["status"] == "done"
        }

    deadline = time.monotonic() + 300
    done: dict = {}
    while time.monotonic() < deadline and not done:
        time.sleep(0.5)
        done = finished_tiles()
    assert not read_json(f"{prefix}/manifest.json")[
        "tiles"
    ]  # mid-run, the manifest is not rewritten per tile
    stop = subprocess.run(
        [str(BIN / "ray"), "job", "stop", "--address", ray_head, job_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stop.returncode == 0, stop.stderr
    done = finished_tiles()
    before = {k: o["LastModified"] for k, o in bucket_keys(f"{prefix}/tiles").items()}
    total = 8  # 64-pixel tiles over the demo AOI at 128-pixel archive tiles
    assert 1 <= len(done) < total, f"the job was stopped with {len(done)} of {total} tiles done"

    again = submit_job(ray_head, args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(done)} already done, 0 changed" in again.stdout
    final = read_json(f"{prefix}/manifest.json")["tiles"]
    assert len(final) == total and all(e["status"] == "done" for e in final.values())
    for tile, entry in done.items():
        assert final[tile] == entry  # finished tiles were not redone ...
        for key in entry["files"]:
            assert (
                bucket_keys(f"{prefix}/{key}")[f"{prefix}/{key}"]["LastModified"] == before[f"{prefix}/{key}"]
            )
    keys = bucket_keys(f"{prefix}/tiles")
    assert sum(k.endswith("/embedding.tif") for k in keys) == total  # ... and every tile exists once
    # the stopped job's workers left partial tiles in their scratch folders; the rerun's workers removed them
    scratch = Path(tempfile.gettempdir()) / SCRATCH
    assert scratch.is_dir() and not list(scratch.rglob("*.tif"))


def test_other_model_or_parameters_are_refused(stac_api, tmp_path):
    from pimc_ray.models import EncoderConfig, save_checkpoint

    out = tmp_path / "out"
    small = {"--workers": "0", "--tile-size": "256"}
    assert run_job(job_args(stac_api.url, out, **small)).returncode == 0
    before = sorted(p.name for p in (out / "tiles").iterdir())
    ckpt = save_checkpoint(tmp_path / "ckpt", EncoderConfig(seed=1).build(), EncoderConfig(seed=1))
    other = run_job(job_args(stac_api.url, out, **small, **{"--checkpoint": str(ckpt)}))
    assert other.returncode == 2 and "must not mix model versions" in other.stderr
    changed = run_job(job_args(stac_api.url, out, **small, **{"--steps": "24"}))
    assert changed.returncode == 2 and "other parameters" in changed.stderr
    half = run_job(job_args(stac_api.url, out, **small, **{"--precision": "bfloat16"}))  # other pixels
    assert half.returncode == 2 and "other parameters" in half.stderr
    assert sorted(p.name for p in (out / "tiles").iterdir()) == before
    rerun = run_job(job_args(stac_api.url, out, **small))
    assert rerun.returncode == 0 and "already done" in rerun.stdout


def test_failed_tiles_are_listed_exit_3_and_the_others_written(stac_api, sample_archive, tmp_path):
    items = [json.loads(line) for line in sample_archive.items_path.read_text().splitlines()]
    broken = [i for i in items if i.get("collection") == "sentinel-2-l2a" and "_32TQR_" in i["id"]][5]
    broken["assets"]["red"]["href"] = (tmp_path / "missing" / "B04.tif").as_uri()
    snapshot = tmp_path / "snapshot.ndjson"
    snapshot.write_text(
        "".join(json.dumps(i) + "\n" for i in items if i.get("collection") == "sentinel-2-l2a")
    )
    out = tmp_path / "out"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--snapshot": str(snapshot)}))
    assert proc.returncode == 3, proc.stderr
    assert "tiles failed" in proc.stderr and "B04.tif" in proc.stderr
    tiles = json.loads((out / "manifest.json").read_text())["tiles"]
    statuses = {e["status"] for e in tiles.values()}
    assert statuses == {"done", "failed"}  # tiles over 32TQS only are fine
    for tile, entry in tiles.items():
        assert (out / "tiles" / tile / "v1" / "embedding.tif").exists() == (entry["status"] == "done")


def test_reads_that_became_nodata_mark_the_tile_degraded_and_a_rerun_maps_it_again(
    stac_api, sample_archive, tmp_path
):
    items = [json.loads(line) for line in sample_archive.items_path.read_text().splitlines()]
    items = [i for i in items if i.get("collection") == "sentinel-2-l2a"]
    broken = [i for i in items if "_32TQR_" in i["id"]][5]
    broken["assets"]["red"]["href"] = (tmp_path / "missing" / "B04.tif").as_uri()
    snapshot = tmp_path / "snapshot.ndjson"
    snapshot.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "out"
    args = job_args(
        stac_api.url, out, **{"--workers": "0", "--snapshot": str(snapshot), "--on-unreadable": "nodata"}
    )

    def status():
        return {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}

    first = run_job(args)
    assert first.returncode == 0, first.stderr
    assert "degraded:" in first.stdout and "--accept-degraded keeps them" in first.stdout
    degraded = {t for t, e in status().items() if e.get("substituted_reads")}
    assert degraded and degraded != set(status())  # tiles over 32TQR only
    for tile in degraded:
        item = json.loads((out / "tiles" / tile / "item.json").read_text())
        assert item["properties"]["pimc:substituted_reads"] == status()[tile]["substituted_reads"] > 0
    kept = run_job([*args, "--accept-degraded"])  # accepted: nothing to map
    assert kept.returncode == 0 and f"{len(status())} already done, 0 changed, 0 to map" in kept.stdout, (
        kept.stdout
    )
    again = run_job(args)  # not accepted: the degraded tiles are mapped again, as new versions
    assert again.returncode == 0, again.stderr
    assert f"{len(degraded)} changed" in again.stdout
    assert {t for t, e in status().items() if e["version"] == 2} == degraded
    for tile in degraded:  # version 2's COGs and quicklook replaced version 1's, which are gone
        folder = out / "tiles" / tile
        assert sorted(p.name for p in (folder / "v2").iterdir()) == [
            "embedding.tif",
            "qa.tif",
            "quicklook.png",
        ]
        assert not list(folder.glob("v1/*"))
        assert (
            json.loads((folder / "item.json").read_text())["assets"]["thumbnail"]["href"]
            == "./v2/quicklook.png"
        )
    assert (
        json.loads((out / "collection.json").read_text())["assets"]["thumbnail"]["href"] == "./quicklook.png"
    )


def test_dry_run_plans_and_writes_nothing(stac_api, tmp_path):
    out = tmp_path / "plan"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--dry-run": None}))
    assert proc.returncode == 0, proc.stderr
    assert (
        "dry run: 8 tiles" in proc.stdout
        and "GB to read" in proc.stdout
        and "pixels/s per worker" in proc.stdout
    )
    assert not out.exists()


@pytest.mark.slow
def test_no_items_through_ray_job_submit_fails(ray_head, stac_api):
    proc = submit_job(
        ray_head,
        job_args(stac_api.url, f"s3://{BUCKET}/none", **{"--start": "2019-01-01", "--end": "2019-03-01"}),
    )
    assert proc.returncode != 0
    assert "error: no 'sentinel-2-l2a' items" in proc.stdout + proc.stderr
    assert not bucket_keys("none")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--aoi": "12.1,45.5,12.0,45.6"}, "error: bbox"),
        ({"--aoi": '{"type": "Point", "coordinates": [12, 45]}'}, "not a Polygon"),
        ({"--start": "2019-01-01", "--end": "2019-03-01"}, "error: no 'sentinel-2-l2a' items"),
        ({"--start": "2022-12-01", "--end": "2022-01-01"}, "reversed"),
        ({"--stac-url": "UNREACHABLE"}, "error: cannot reach the STAC API"),
        ({"--out": "gs://bucket/x"}, "error: --out gs://bucket/x"),
        ({"--tile-size": "100"}, "multiple of 16"),
        (
            {"--min-valid": "100"},
            "no pixel of the AOI has 100 or more cloud-free observations",
        ),  # after mapping
        ({"--start": "2022-07-22", "--end": "2022-07-22"}, "a date range too short"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_no_outputs(stac_api, tmp_path, overrides, message):
    if overrides.get("--stac-url") == "UNREACHABLE":
        overrides = {"--stac-url": f"http://127.0.0.1:{free_port()}"}
    out = tmp_path / "out"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--out": str(out), **overrides}))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]  # an emptied output: no files


def test_corrupt_checkpoint_is_refused(stac_api, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    out = tmp_path / "out"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--checkpoint": str(ckpt)}))
    assert proc.returncode == 2
    assert "checkpoint" in proc.stderr and proc.stderr.startswith("error: ")
    assert not out.exists()


def test_classify_job_needs_a_head(stac_api, tmp_path):
    proc = run_job(job_args(stac_api.url, tmp_path / "c", **{"--workers": "0"}), job="classify_aoi.py")
    assert proc.returncode == 2 and "--head or --head-train-aoi" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_a_head_of_another_embedding_size_is_refused_before_anything_is_written(stac_api, tmp_path):
    from pimc_ray.models.heads import LinearClassifier

    head = LinearClassifier(5, [1, 2], {1: "a", 2: "b"}).save(tmp_path / "head5")  # the default encoder: 64-d
    out = tmp_path / "c"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--head": head}), job="classify_aoi.py")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "classifies 5-d embeddings" in lines[0] and "gives 64-d ones" in lines[0]
    assert not out.exists()


def test_derive_rebuilds_the_manifest_collection_and_mosaics_from_the_tiles(stac_api, tmp_path):
    out = tmp_path / "out"
    assert run_job(job_args(stac_api.url, out, **{"--workers": "0", "--tile-size": "128"})).returncode == 0

    def derived():
        """The run-level files: JSON as data, mosaics as what GDAL reads from them, quicklooks as bytes."""
        files = {}
        for path in sorted(p for p in out.iterdir() if p.is_file() and p.name != "items.ndjson"):
            if path.suffix == ".json":
                files[path.name] = json.loads(path.read_text())
            elif path.suffix in (".png", ".svg"):
                files[path.name] = path.read_bytes()
            else:
                with rasterio.open(path) as src:
                    files[path.name] = (src.read(), src.descriptions, src.transform, src.crs)
        return files

    check_stac(out)  # no checkpoint: no mlm extension, the others validate
    before = derived()
    assert {"manifest.json", "collection.json", "quicklook.png"} < set(before)
    assert any(n.startswith("mosaic_") for n in before)
    manifest = before["manifest.json"]
    for name in before:
        (out / name).unlink()
    (out / "manifest.json").write_text(
        json.dumps({**manifest, "tiles": {}})
    )  # as a run leaves it at its start

    proc = subprocess.run(
        [str(BIN / "pimc"), "derive", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(manifest['tiles'])} done" in proc.stdout
    after = derived()
    assert set(after) == set(before)
    for name, content in before.items():
        if name.endswith((".json", ".png", ".svg")):
            assert after[name] == content, name
        else:
            np.testing.assert_array_equal(after[name][0], content[0], err_msg=name)
            assert after[name][1:] == content[1:], name

    nothing = subprocess.run(
        [str(BIN / "pimc"), "derive", str(tmp_path / "empty")], capture_output=True, text=True, timeout=300
    )
    assert nothing.returncode == 2 and "holds no mapping run" in nothing.stderr
