"""Label sources (GeoJSON rasterised by hand, label rasters) and jobs/train_head.py, which fits heads on them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely.geometry

from pimc_ray.data.labels import GeoJSONLabels, RasterLabels
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import LabelError
from pimc_ray.local.archive import CLASSES, label_raster, tile_info
from pimc_ray.models.heads import LinearClassifier
from tests.specs import TEST_SPEC

ROOT = Path(__file__).resolve().parents[2]
GRID = OutputGrid(32632, (700000.0, 5000000.0, 700320.0, 5000320.0), 10.0, shapely.geometry.box(0, 0, 1, 1))
WINDOW = Window(0, 0, 32, 32, GRID.bounds)


def lonlat(x: float, y: float, epsg: int = 32632) -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)


def feature(geometry: dict, value) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": {"crop": value}}


def write_geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_geojson_points_label_their_pixel_and_polygons_the_pixels_they_hold(tmp_path):
    point = lonlat(700000 + 5 * 10 + 3, 5000320 - 7 * 10 - 6)  # inside pixel (row 7, col 5)
    square = [lonlat(700000 + x, 5000320 - y) for x, y in ((100, 100), (200, 100), (200, 200), (100, 200))]
    path = write_geojson(
        tmp_path / "labels.geojson",
        [
            feature({"type": "Point", "coordinates": point}, 4),
            feature({"type": "Polygon", "coordinates": [[*square, square[0]]]}, 2),
        ],
    )
    labels = GeoJSONLabels.load(path, class_property="crop")
    block = labels.read(GRID, WINDOW)
    expected = np.zeros((32, 32), np.uint8)
    expected[7, 5] = 4
    expected[10:20, 10:20] = 2  # pixel centres inside the 100 m square (lon/lat round trip, 1 mm error)
    np.testing.assert_array_equal(block, expected)
    minx, miny, maxx, maxy = labels.area().bounds
    assert minx < point[0] < maxx and miny < point[1] < maxy


def test_geojson_class_names_become_ids_and_bad_files_are_refused(tmp_path):
    point = {"type": "Point", "coordinates": list(lonlat(700055, 5000255))}
    named = GeoJSONLabels.load(
        write_geojson(tmp_path / "n.geojson", [feature(point, "maize"), feature(point, "wheat")]),
        class_property="crop",
    )
    assert named.ids == (1, 2) and named.legend()[0] == {1: "maize", 2: "wheat"}
    with pytest.raises(LabelError, match="no geometry or no 'class' property"):
        GeoJSONLabels.load(tmp_path / "n.geojson")
    mixed = write_geojson(tmp_path / "m.geojson", [feature(point, 3), feature(point, "wheat")])
    with pytest.raises(LabelError, match="all be integer ids"):
        GeoJSONLabels.load(mixed, class_property="crop")
    (tmp_path / "bad.geojson").write_text("{nope")
    with pytest.raises(LabelError, match="cannot read labels"):
        GeoJSONLabels.load(tmp_path / "bad.geojson")


def test_label_raster_is_read_onto_the_window(sample_archive):
    tile = tile_info(TEST_SPEC, "33TTL")
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    window = grid.windows(64)[3]
    block = RasterLabels(sample_archive.label_paths["33TTL"]).read(grid, window)
    truth = label_raster(TEST_SPEC, "33TTL")[window.row : window.row + 64, window.col : window.col + 64]
    np.testing.assert_array_equal(block, truth)
    with rasterio.open(sample_archive.label_paths["33TTL"]) as src:
        assert src.crs.to_epsg() == 32633


def run_train_head(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "jobs" / "train_head.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_train_head_job_from_stac_labels_and_from_geojson_points(stac_api, sample_archive, tmp_path):
    from pimc_ray.local import tile_bbox
    from pimc_ray.models import EncoderConfig, save_checkpoint

    checkpoint = Path(
        save_checkpoint(tmp_path / "encoder", EncoderConfig(seed=3).build(), EncoderConfig(seed=3))
    )
    common = [
        "--start",
        "2022-01-01",
        "--end",
        "2022-12-31",
        "--stac-url",
        stac_api.url,
        "--window-size",
        "64",
    ]
    area = tile_bbox("33TTL", TEST_SPEC, (0.0, 0.0, 0.5, 0.5))
    proc = run_train_head(
        "--checkpoint", str(checkpoint), "--labels-collection", "pimc-sample-labels", "--aoi", area,
        "--per-class", "50", *common,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    head = LinearClassifier.load(checkpoint / "head")  # saved beside the encoder
    fit = json.loads((checkpoint / "head" / "fit.json").read_text())
    assert head.class_names[1] == CLASSES[1].name and head.class_colors[1] == CLASSES[1].color_hint
    assert fit["weights"].startswith("checkpoint sha256:") and fit["pixels"] == sum(fit["per_class"].values())
    assert set(fit["per_class"]) <= {str(c) for c in CLASSES} and max(fit["per_class"].values()) <= 50

    # the same from GeoJSON points at pixel centres of tile 33TTL, classes taken from the truth raster
    tile = tile_info(TEST_SPEC, "33TTL")
    truth = label_raster(TEST_SPEC, "33TTL")
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 60, 120), rng.integers(0, 60, 120)
    xmin, ymax = tile.bounds[0], tile.bounds[3]
    points = [
        feature(
            {"type": "Point", "coordinates": lonlat(xmin + 10 * c + 5, ymax - 10 * r - 5, 32633)},
            int(truth[r, c]),
        )
        for r, c in zip(rows, cols, strict=True)
    ]
    geojson = write_geojson(tmp_path / "points.geojson", points)
    out = tmp_path / "points-head"
    proc = run_train_head("--labels", str(geojson), "--class-property", "crop", "--out", str(out), *common)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((out / "fit.json").read_text())
    labelled = {int(k): v for k, v in fit["per_class"].items()}
    expected = {
        int(c): int(n) for c, n in zip(*np.unique(truth[rows, cols], return_counts=True), strict=True)
    }
    assert sum(labelled.values()) <= sum(expected.values()) and set(labelled) <= set(expected)
    assert fit["weights"].startswith("random-init") and LinearClassifier.load(out).class_ids == sorted(
        labelled
    )


def test_train_head_refuses_bad_input_with_one_line(stac_api, tmp_path):
    common = ["--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", stac_api.url]
    proc = run_train_head("--labels-collection", "pimc-sample-labels", "--out", str(tmp_path / "h"), *common)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "error: --labels-collection needs --aoi (the area whose labels to use)"
    )
    (tmp_path / "enc").mkdir()
    proc = run_train_head("--checkpoint", str(tmp_path / "enc"), "--labels", "x.geojson", *common)
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error: checkpoint")
        and not (tmp_path / "enc" / "head").exists()
    )
