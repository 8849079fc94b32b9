"""End to end: `ray job submit jobs/embed_aoi.py` against the local STAC API, and the job's bad-input contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, reproject
from rio_cogeo.cogeo import cog_validate

from pimc_ray.aoi import load_aoi
from pimc_ray.cli import demo_aoi, demo_train_aoi
from pimc_ray.testing.archive import CLASSES
from pimc_ray.testing.stac_server import free_port
from tests.specs import TEST_SPEC

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "embed_aoi.py"
BIN = Path(sys.executable).parent


def job_args(stac_url, out, **overrides):
    args = {
        "--aoi": demo_aoi(TEST_SPEC),
        "--start": "2022-01-01",
        "--end": "2022-12-31",
        "--stac-url": stac_url,
        "--head-train-aoi": demo_train_aoi(TEST_SPEC),
        "--out": str(out),
        "--window-size": "64",
    }
    args.update(overrides)
    return [str(v) for kv in args.items() for v in kv]


def run_job(args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(JOB), *args], capture_output=True, text=True, env=env, timeout=600
    )


def submit_job(address, args):
    """`ray job submit` of the embedding job; the job's exit code becomes the command's."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--", sys.executable, str(JOB), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def ground_truth_on(grid_src, archive):
    truth = np.zeros((grid_src.height, grid_src.width), np.uint8)
    for path in archive.label_paths.values():
        with rasterio.open(path) as lab:
            part = np.zeros_like(truth)
            reproject(
                lab.read(1),
                part,
                src_transform=lab.transform,
                src_crs=lab.crs,
                src_nodata=0,
                dst_transform=grid_src.transform,
                dst_crs=grid_src.crs,
                dst_nodata=0,
                resampling=Resampling.nearest,
            )
            truth = np.where(truth == 0, part, truth)
    return truth


@pytest.mark.slow
def test_ray_job_submit_maps_the_aoi(ray_head, stac_api, sample_archive, tmp_path):
    out = tmp_path / "maps"
    proc = submit_job(ray_head, job_args(stac_api.url, out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "summary:" in proc.stdout and "pixels/s" in proc.stdout

    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "classes_epsg32632.tif",
        "confidence_epsg32632.tif",
        "embedding_epsg32632.tif",
        "head",
        "items.ndjson",
        "run.json",
        "valid_count_epsg32632.tif",
    ]
    for name in names:
        if name.endswith(".tif"):
            assert cog_validate(str(out / name), quiet=True)[0], name
    aoi_utm = load_aoi(demo_aoi(TEST_SPEC)).to_crs(32632)
    with rasterio.open(out / "embedding_epsg32632.tif") as emb:
        assert emb.crs.to_epsg() == 32632
        assert emb.count == 64 and emb.descriptions[0] == "emb_00"
        assert np.isnan(emb.nodata)
        assert "random-init" in emb.tags()["pimc_weights"]
        left, bottom, right, top = emb.bounds
        xmin, ymin, xmax, ymax = aoi_utm.bounds
        assert left <= xmin and bottom <= ymin and right >= xmax and top >= ymax  # covers the AOI
        assert right - xmax < 10 and xmin - left < 10  # ... snapped to the 10 m grid, no more
        data = emb.read()
        assert np.isfinite(data).all(axis=0).mean() > 0.9  # nearly every AOI pixel has an embedding
    with rasterio.open(out / "classes_epsg32632.tif") as cls_src:
        assert cls_src.nodata == 0 and cls_src.descriptions == ("class_id",)
        assert cls_src.colormap(1)[1][:3] == CLASSES[1].colour
        classes = cls_src.read(1)
        truth = ground_truth_on(cls_src, sample_archive)
    both = (classes > 0) & (truth > 0)
    accuracy = float((classes[both] == truth[both]).mean())
    chance = max(np.bincount(truth[both]) / both.sum())  # the majority-class rate
    assert accuracy > max(0.5, chance + 0.25), f"accuracy {accuracy:.3f}, majority class {chance:.3f}"

    meta = json.loads((out / "run.json").read_text())
    assert meta["pixels"] == int(np.isfinite(data).all(axis=0).sum())

    # the notebook opens and summarises the maps
    notebook = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / "explore_maps.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert notebook.returncode == 0, notebook.stderr
    assert "winter_cereal" in notebook.stdout and "embedding" not in notebook.stderr
    (out / "overview.png").unlink(missing_ok=True)

    # a rerun with the same parameters skips the work and leaves the files alone
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_job(job_args(stac_api.url, out, **{"--workers": "0"}))
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.slow
def test_no_items_through_ray_job_submit_fails(ray_head, stac_api, tmp_path):
    out = tmp_path / "none"
    proc = submit_job(
        ray_head, job_args(stac_api.url, out, **{"--start": "2019-01-01", "--end": "2019-03-01"})
    )
    assert proc.returncode != 0
    assert "error: no 'sentinel-2-l2a' items" in proc.stdout + proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--aoi": "12.1,45.5,12.0,45.6"}, "error: bbox"),
        ({"--aoi": '{"type": "Point", "coordinates": [12, 45]}'}, "not a Polygon"),
        ({"--start": "2019-01-01", "--end": "2019-03-01"}, "error: no 'sentinel-2-l2a' items"),
        ({"--start": "2022-12-01", "--end": "2022-01-01"}, "reversed"),
        ({"--stac-url": "UNREACHABLE"}, "error: cannot reach the STAC API"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_and_no_outputs(stac_api, tmp_path, overrides, message):
    if overrides.get("--stac-url") == "UNREACHABLE":
        overrides = {"--stac-url": f"http://127.0.0.1:{free_port()}"}
    out = tmp_path / "out"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", **overrides}))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert not out.exists()


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
