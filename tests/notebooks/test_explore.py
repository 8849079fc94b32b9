"""pimc_ray.explore, the notebooks' reading and picture helpers, on small seeded rasters written here.

References: GDAL reading a COG's overview itself, NumPy slices of the array written, distances and principal axes
computed another way (a loop, the covariance's eigenvectors), and Pillow decoding the PNGs.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from pimc_ray.errors import InvalidConfigError, StorageError
from pimc_ray.explore import (
    ClassInfo,
    Raster,
    class_rgba,
    figures_folder,
    nearest_pixels,
    open_run,
    pca_rgb,
    png_data_uri,
    read_raster,
    run_location,
    sample_points,
    to_web_mercator,
)

#: A 10 m grid in UTM 32N near the sample archive.
TRANSFORM = from_origin(727040.0, 5042560.0, 10.0, 10.0)


@pytest.fixture(scope="module")
def cog(tmp_path_factory):
    """A 3-band float32 256 x 512 GeoTIFF with overviews at 2 and 4 (averaged), NaN nodata; and its array."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 256, 512)).astype(np.float32)
    data[:, :20, :30] = np.nan
    path = tmp_path_factory.mktemp("explore") / "cog.tif"
    profile = {"driver": "GTiff", "tiled": True, "blockxsize": 128, "blockysize": 128, "nodata": float("nan")}
    with rasterio.open(
        path,
        "w",
        **profile,
        width=512,
        height=256,
        count=3,
        dtype="float32",
        crs="EPSG:32632",
        transform=TRANSFORM,
    ) as dst:
        dst.write(data)
        dst.build_overviews([2, 4], Resampling.average)
    return path, data


def test_a_read_within_the_budget_is_the_cogs_overview(cog):
    path, _ = cog
    raster = read_raster(str(path), max_pixels=128 * 256, resampling="average")
    assert raster.factor == 2 and raster.data.shape == (3, 128, 256)
    with rasterio.open(path, overview_level=0) as src:  # GDAL's first overview, read as it is
        np.testing.assert_array_equal(raster.data, src.read())
    assert raster.transform == TRANSFORM * rasterio.Affine.scale(2)
    assert raster.bounds == pytest.approx((727040.0, 5042560.0 - 2560, 727040.0 + 5120, 5042560.0))


def test_the_budget_bounds_pixels_per_band_and_values_in_all(cog):
    path, _ = cog
    for max_pixels in (1, 1000, 5000, 40_000):
        raster = read_raster(str(path), max_pixels=max_pixels)
        assert raster.shape[0] * raster.shape[1] <= max_pixels
        assert read_raster(str(path), max_pixels=max_pixels, factor=raster.factor).shape == raster.shape
    few = read_raster(str(path), max_values=3 * 1000)  # three bands: 1,000 pixels each
    assert few.shape[0] * few.shape[1] <= 1000
    with pytest.raises(InvalidConfigError, match="factor 1 reads more than 1000"):
        read_raster(str(path), max_pixels=1000, factor=1)


def test_a_window_is_read_at_full_resolution_where_it_fits(cog):
    path, data = cog
    x0, y1 = TRANSFORM * (100, 40)  # columns 100-149, rows 40-69
    x1, y0 = TRANSFORM * (150, 70)
    raster = read_raster(str(path), bands=[2], bounds=(x0, y0, x1, y1))
    assert raster.factor == 1
    np.testing.assert_array_equal(raster.data[0], data[1, 40:70, 100:150])
    lon, lat = raster.lonlat([0], [0])[0]
    assert raster.rowcol(lon, lat) == (0, 0)
    values = sample_points(str(path), [(lon, lat)])
    np.testing.assert_array_equal(values[0], data[:, 40, 100])
    with pytest.raises(InvalidConfigError, match="miss the raster"):
        read_raster(str(path), bounds=(0, 0, 10, 10))


def test_valid_pixels_leave_out_nan():
    raster = Raster(np.array([[[1.0, np.nan]], [[2.0, 3.0]]]), TRANSFORM, None, None)
    assert raster.valid().tolist() == [[True, False]]


def test_an_unreadable_raster_names_the_path(tmp_path):
    with pytest.raises(StorageError, match="nothing.tif"):
        read_raster(str(tmp_path / "nothing.tif"))


def test_nearest_pixels_are_those_a_loop_finds():
    rng = np.random.default_rng(3)
    embedding = rng.normal(size=(8, 6, 7))
    embedding[:, 2, 3] = np.nan
    query = embedding[:, 4, 5].copy()
    rows, cols, dist = nearest_pixels(embedding, query, k=5, exclude=(4, 5))
    found = []
    for r in range(6):
        for c in range(7):
            v = embedding[:, r, c]
            if (r, c) != (4, 5) and np.isfinite(v).all():
                found.append((1 - v @ query / (np.linalg.norm(v) * np.linalg.norm(query)), r, c))
    expected = sorted(found)[:5]
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(r, c) for _, r, c in expected]
    np.testing.assert_allclose(dist, [d for d, _, _ in expected])
    rows, _, dist = nearest_pixels(embedding, query, k=1, metric="euclidean")
    assert dist[0] == 0 and rows[0] == 4  # itself, when not left out
    with pytest.raises(InvalidConfigError, match="pick a pixel with data"):
        nearest_pixels(embedding, embedding[:, 2, 3], k=1)


def test_pca_colours_follow_the_first_principal_axis():
    rng = np.random.default_rng(4)
    # pixels spread mostly along one direction of a 5-d space
    axis = np.array([1.0, 2.0, 0.0, -1.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.0, -1.0, 0.5])
    values = rng.normal(size=(400, 1)) * 10 * axis + rng.normal(size=(400, 5)) * 0.1
    embedding = values.T.reshape(5, 20, 20).copy()
    embedding[:, 0, 0] = np.nan
    rgba, components = pca_rgb(embedding)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(values[1:].T))
    assert abs(components[0] @ eigenvectors[:, -1]) == pytest.approx(1, abs=1e-6)
    assert rgba[0, 0].tolist() == [0, 0, 0, 0] and (rgba[..., 3].ravel()[1:] == 1).all()
    # red follows the projection on the first axis (up to its sign)
    red = rgba[..., 0].ravel()[1:]
    projection = (values[1:] - values[1:].mean(0)) @ components[0]
    assert abs(np.corrcoef(red, projection)[0, 1]) > 0.95


def test_class_pictures_are_the_legends_colours_and_pngs_decode():
    legend = {1: ClassInfo(1, "a", (255, 0, 0)), 3: ClassInfo(3, "c", (0, 0, 255))}
    classes = np.array([[0, 1], [3, 2]], dtype=np.uint8)
    rgba = class_rgba(classes, legend)
    assert rgba.tolist() == [[[0, 0, 0, 0], [255, 0, 0, 255]], [[0, 0, 255, 255], [0, 0, 0, 0]]]
    uri = png_data_uri(rgba)
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "PNG" and image.size == (2, 2)
        np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), rgba)
    floats = png_data_uri(np.full((3, 4, 3), 0.5))
    with Image.open(io.BytesIO(base64.b64decode(floats.split(",", 1)[1]))) as image:
        assert image.size == (4, 3) and np.asarray(image)[0, 0].tolist() == [128, 128, 128]


def test_web_mercator_keeps_the_lonlat_footprint(cog):
    path, _ = cog
    raster = read_raster(str(path), max_pixels=5000)
    warped = to_web_mercator(raster)
    assert warped.crs.to_epsg() == 3857
    assert warped.lonlat_bounds() == pytest.approx(raster.lonlat_bounds(), abs=1e-3)
    assert np.isnan(warped.data).any() and np.isfinite(warped.data).any()


def test_a_run_location_is_required_and_must_hold_a_collection(tmp_path, monkeypatch):
    monkeypatch.delenv("PIMC_RUN", raising=False)
    with pytest.raises(InvalidConfigError, match="set PIMC_RUN to a run's collection.json"):
        run_location()
    monkeypatch.setenv("PIMC_RUN", str(tmp_path))
    assert run_location() == str(tmp_path)
    with pytest.raises(StorageError, match="collection.json does not exist"):
        open_run()
    with pytest.raises(StorageError, match="collection.json does not exist"):
        open_run(f"{tmp_path}/collection.json")


def test_figures_go_to_the_folder_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PIMC_FIGURES", str(tmp_path / "a" / "b"))
    assert figures_folder() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert figures_folder(str(tmp_path / "c")) == tmp_path / "c"
