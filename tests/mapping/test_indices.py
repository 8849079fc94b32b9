"""The indices job end to end: search -> stack -> harmonise -> mask -> regular grid -> indices, per UTM zone.

Values are checked against NDVI computed by hand from the generator's own reflectances (np.interp over the
cloud-free dates), on an AOI that spans two UTM zones.
"""

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.features import geometry_mask
from rio_cogeo.cogeo import cog_validate

from pimc_ray.cli.jobs import indices_main
from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.series import SeriesSpec
from pimc_ray.data.stac import DateRange
from pimc_ray.data.stack import DEFAULT_MASK_CLASSES
from pimc_ray.data.timegrid import TimeGridSpec
from pimc_ray.errors import AllCloudError
from pimc_ray.local.archive import acquisition_dates, render_scene, tile_info
from pimc_ray.mapping.indices import export_indices
from pimc_ray.mapping.requests import AreaRequest
from pimc_ray.mapping.runner import Parallelism
from tests.specs import TEST_SPEC

YEAR = DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31))
IN_PROCESS = Parallelism(workers=0)


def two_zone_aoi():
    """East part of 32TQS and west part of 33TTL (the zone edge, 12 degrees E, lies between them)."""
    west, east = tile_info(TEST_SPEC, "32TQS"), tile_info(TEST_SPEC, "33TTL")
    lon0, lat0 = Transformer.from_crs(west.epsg, 4326, always_xy=True).transform(
        west.bounds[2] - 400, west.bounds[1] + 300
    )
    lon1, lat1 = Transformer.from_crs(east.epsg, 4326, always_xy=True).transform(
        east.bounds[0] + 400, east.bounds[3] - 300
    )
    return load_aoi([lon0, lat0, lon1, lat1])


@pytest.fixture(scope="module")
def exported(stac_api, tmp_path_factory):
    out = tmp_path_factory.mktemp("indices") / "out"
    request = AreaRequest(two_zone_aoi(), SeriesSpec(dates=YEAR), stac_api.url, str(out), parallel=IN_PROCESS)
    summary = export_indices(request)
    return request, summary


def hand_ndvi(tile_id, xs, ys, grid_days):
    """NDVI on the grid dates at UTM pixel centres (xs, ys) of a tile, from the generator's reflectance."""
    tile = tile_info(TEST_SPEC, tile_id)
    cols = ((xs - tile.bounds[0]) // 10).astype(int)
    rows = ((tile.bounds[3] - ys) // 10).astype(int)
    days, reds, nirs, valids = [], [], [], []
    for date in acquisition_dates(TEST_SPEC):
        scene = render_scene(TEST_SPEC, tile_id, date)
        scl10 = scene.scl.repeat(2, axis=0).repeat(2, axis=1)
        days.append((np.datetime64(date) - np.datetime64("1970-01-01")).astype(float))
        reds.append(scene.band("B04")[rows, cols])
        nirs.append(scene.band("B08")[rows, cols])
        valids.append(~np.isin(scl10[rows, cols], sorted(DEFAULT_MASK_CLASSES)))
    days, reds, nirs, valids = map(np.array, (days, reds, nirs, valids))
    out = []
    for p in range(len(xs)):
        ok = valids[:, p]
        red = np.interp(grid_days, days[ok], reds[ok, p])
        nir = np.interp(grid_days, days[ok], nirs[ok, p])
        out.append(np.clip((nir - red) / (nir + red), -1, 1))
    return np.array(out)  # (P, T)


def test_outputs_per_zone_are_valid_cogs(exported):
    request, summary = exported
    out = Path(request.out)
    tifs = [f"{k}_epsg{z}.tif" for k in ("evi", "ndvi", "qa", "savi") for z in (32632, 32633)]
    assert sorted(summary.keys) == sorted([*tifs, "items.ndjson"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*tifs, "items.ndjson", "manifest.json", "status"])
    assert sorted(p.name for p in (out / "status").iterdir()) == ["epsg32632.json", "epsg32633.json"]
    for path in (out / key for key in summary.keys if key.endswith(".tif")):
        assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(Path(request.out) / "ndvi_epsg32633.tif") as src:
        assert src.count == 36 and src.crs.to_epsg() == 32633
        assert src.descriptions[0] == "2022-01-06" and src.descriptions[-1] == "2022-12-26"
    with rasterio.open(Path(request.out) / "qa_epsg32632.tif") as src:
        assert src.descriptions == ("valid_observations", "first_valid", "last_valid")
        qa = src.read()
        xs, _ = rasterio.transform.xy(src.transform, np.zeros(src.width, int), np.arange(src.width))
        in_aoi = geometry_mask(
            [request.aoi.to_crs(32632)], out_shape=qa[0].shape, transform=src.transform, invert=True
        )
    # Inside the AOI and west of 32TQS's east edge every pixel has observations; between that edge and 12 E no
    # tile covers the AOI, and outside the AOI polygon (rotated in UTM) everything is nodata.
    covered = np.array(xs)[None, :] < tile_info(TEST_SPEC, "32TQS").bounds[2]
    inside = qa[0] > 0
    # windows rasterise the AOI separately: GDAL may decide a pixel centre on the AOI's edge either way
    assert (inside != (in_aoi & covered)).sum() <= 3
    assert (qa[1][inside] >= 20220103).all() and (qa[2][inside] <= 20221229).all()
    assert (qa[1][inside] <= qa[2][inside]).all()


@pytest.mark.parametrize(("zone", "tile_id"), [(32632, "32TQS"), (32633, "33TTL")])
def test_ndvi_series_equal_hand_computation(exported, zone, tile_id):
    request, _ = exported
    with rasterio.open(Path(request.out) / f"ndvi_epsg{zone}.tif") as src:
        ndvi = src.read()  # (T, H, W)
        transform = src.transform
    rng = np.random.default_rng(zone)
    rows, cols = np.nonzero(np.isfinite(ndvi[0]))
    pick = rng.choice(len(rows), 25, replace=False)
    rows, cols = rows[pick], cols[pick]
    xs, ys = rasterio.transform.xy(transform, rows, cols)
    grid = request.spec.grid_dates()
    grid_days = (grid - np.datetime64("1970-01-01T00:00:00")).astype("timedelta64[s]").astype(float) / 86400
    expected = hand_ndvi(tile_id, np.array(xs), np.array(ys), grid_days)
    np.testing.assert_allclose(ndvi[:, rows, cols].T, expected, atol=2e-6)


def test_rerun_skips(exported):
    request, summary = exported
    again = export_indices(request)
    assert again.skipped and again.pixels == summary.pixels


def test_all_cloud_is_an_error_and_writes_nothing(stac_api, tmp_path):
    out = tmp_path / "none"
    spec = SeriesSpec(dates=YEAR, timegrid=TimeGridSpec(min_valid=38))  # more than the 37 acquisitions
    with pytest.raises(AllCloudError, match="cloud-free"):
        export_indices(AreaRequest(two_zone_aoi(), spec, stac_api.url, str(out), parallel=IN_PROCESS))
    assert not out.exists()


def test_cli_entry_point(stac_api, tmp_path, capsys):
    aoi = ",".join(f"{v:.6f}" for v in two_zone_aoi().bounds)
    args = ["--aoi", aoi, "--start", "2022-06-01", "--end", "2022-06-30", "--stac-url", stac_api.url,
            "--out", str(tmp_path / "o"), "--steps", "3", "--min-valid", "1", "--workers", "0"]  # fmt: skip
    assert indices_main(args) == 0
    assert "summary:" in capsys.readouterr().out
    assert indices_main([*args[:-4], "--min-valid", "0", "--workers", "0"]) == 2
    assert "--min-valid must be at least 1" in capsys.readouterr().err


def test_reads_that_became_nodata_mark_the_zone_degraded_and_a_rerun_computes_it_again(
    stac_api, sample_archive, tmp_path, capsys
):
    """The mapping jobs counted such reads; the indices job published the zone as done like any other."""
    import json

    items = [json.loads(line) for line in sample_archive.items_path.read_text().splitlines()]
    items = [i for i in items if i.get("collection") == "sentinel-2-l2a"]
    broken = [i for i in items if "_32TQS_" in i["id"]][5]
    broken["assets"]["red"]["href"] = (tmp_path / "missing" / "B04.tif").as_uri()
    snapshot = tmp_path / "snapshot.ndjson"
    snapshot.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "out"
    aoi = ",".join(f"{v:.6f}" for v in two_zone_aoi().bounds)
    args = ["--aoi", aoi, "--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", stac_api.url,
            "--out", str(out), "--workers", "0", "--snapshot", str(snapshot), "--on-unreadable", "nodata"]  # fmt: skip

    def status():
        return {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}

    assert indices_main(args) == 0
    first = capsys.readouterr().out
    assert "degraded:" in first and "--accept-degraded keeps them" in first
    assert status()["epsg32632"]["substituted_reads"] > 0 and "substituted_reads" not in status()["epsg32633"]
    assert indices_main([*args, "--accept-degraded"]) == 0  # accepted: nothing to do
    assert "(already done, skipped)" in capsys.readouterr().out
    assert indices_main(args) == 0  # not accepted: computed again
    again = capsys.readouterr().out
    assert "computing again epsg32632" in again and "(already done, skipped)" not in again
