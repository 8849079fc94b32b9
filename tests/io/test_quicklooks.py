"""Quicklooks of tiles and runs (pimc_ray.io.quicklooks).

Checked against independent references: NumPy's eigen-decomposition of the sample covariance and its percentiles
for the PCA basis, GDAL's nearest-neighbour resampling of a GeoTIFF for the decimation, GDAL reading back the PNGs,
pyproj placing a tile's centre on the lon/lat grid of a run across two UTM zones, and an XML parser for the legend.
"""

import datetime as dt
import json
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import shapely.geometry
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from pimc_ray.data.tiles import TileGrid
from pimc_ray.io.quicklooks import (
    PcaBasis,
    Quicklook,
    QuicklookCanvas,
    class_palette,
    legend_svg,
    png_bytes,
    write_run_quicklooks,
)
from pimc_ray.io.rasters import RasterSet
from pimc_ray.io.stac_items import tile_item
from pimc_ray.mapping.maps import QUICKLOOK_FILES, tile_products, tile_quicklooks
from pimc_ray.storage import open_store

DATES = (dt.date(2022, 1, 1), dt.date(2022, 12, 31))


def _png(data):
    """``(bands, palette or None)`` of PNG bytes as GDAL reads them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.MemoryFile(data) as memory, memory.open() as src:
            assert src.driver == "PNG"
            return src.read(), (src.colormap(1) if src.colorinterp[0].name == "palette" else None)


def test_pca_basis_is_the_sample_covariances_leading_eigenvectors():
    rng = np.random.default_rng(3)
    sample = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 6)) * [5, 4, 3, 2, 1, 0.5] + 10
    basis = PcaBasis.fit(sample)
    values, vectors = np.linalg.eigh(np.cov(sample.T))  # ascending
    leading = vectors[:, ::-1][:, :3].T
    components = np.asarray(basis.components)
    np.testing.assert_allclose(np.abs(np.sum(components * leading, axis=1)), 1, atol=1e-6)  # same axes
    assert (components[np.arange(3), np.abs(components).argmax(axis=1)] > 0).all()  # the sign convention
    np.testing.assert_allclose(basis.mean, sample.mean(axis=0))
    projected = (sample - sample.mean(axis=0)) @ components.T
    np.testing.assert_allclose(projected.var(axis=0, ddof=1), values[::-1][:3], rtol=1e-6)
    np.testing.assert_allclose(basis.low, np.percentile(projected, 2, axis=0))
    np.testing.assert_allclose(basis.high, np.percentile(projected, 98, axis=0))
    assert PcaBasis.from_dict(json.loads(json.dumps(basis.to_dict()))) == basis


def test_false_colour_stretches_each_component_and_hides_nodata():
    rng = np.random.default_rng(4)
    sample = rng.normal(size=(2000, 5)) * [3, 2, 1, 0.1, 0.1]
    basis = PcaBasis.fit(sample)
    block = sample[:400].T.reshape(5, 20, 20).copy()
    block[2, 0, :7] = np.nan  # one band's nodata makes the pixel nodata
    rgba = basis.rgba(block)
    assert rgba.dtype == np.uint8 and rgba.shape == (4, 20, 20)
    expected = (np.asarray(basis.components) @ (block.reshape(5, -1) - np.asarray(basis.mean)[:, None])).T
    expected = np.clip((expected - basis.low) / (np.asarray(basis.high) - basis.low), 0, 1) * 255  # (400, 3)
    valid = np.isfinite(block).all(axis=0).reshape(-1)
    np.testing.assert_allclose(rgba[:3].reshape(3, -1).T[valid], expected[valid], atol=0.5 + 1e-9)
    np.testing.assert_array_equal(rgba[3].reshape(-1), np.where(valid, 255, 0))
    assert (rgba[:, 0, :7] == 0).all()
    every = basis.rgba(sample.T.reshape(5, 40, 50))[:3].reshape(3, -1)
    assert list((every == 0).mean(axis=1)) == pytest.approx([0.02] * 3, abs=0.005)  # the 2nd percentiles ...
    assert list((every == 255).mean(axis=1)) == pytest.approx([0.02] * 3, abs=0.005)  # ... and the 98th


def test_a_basis_of_fewer_than_three_bands_and_of_too_few_pixels():
    basis = PcaBasis.fit(np.random.default_rng(5).normal(size=(100, 2)))
    assert basis.components[2] == (0.0, 0.0) and basis.dim == 2
    rgba = basis.rgba(np.ones((2, 3, 3)))
    assert (rgba[2] == rgba[2, 0, 0]).all() and (rgba[3] == 255).all()  # the missing component: one colour
    with pytest.raises(ValueError, match="two or more"):
        PcaBasis.fit(np.array([[1.0, np.nan], [2.0, 3.0]]))


@pytest.mark.parametrize(("height", "width", "max_size", "step"), [(96, 48, 32, 3), (64, 64, 512, 1)])
def test_a_canvas_fed_window_by_window_is_gdals_nearest_resampling(tmp_path, height, width, max_size, step):
    """The pixel kept per cell is the one GDAL's nearest neighbour reads, whatever order and shape the windows
    come in."""
    rng = np.random.default_rng(6)
    classes = rng.integers(0, 12, (1, height, width)).astype(np.uint8)
    path = tmp_path / "classes.tif"
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(classes)
        with rasterio.open(path) as src:  # no overviews: GDAL resamples the full resolution
            expected = src.read(1, out_shape=(height // step, width // step), resampling=Resampling.nearest)
    quicklook = Quicklook("classes", colormap=class_palette({}, range(1, 12)), max_size=max_size)
    canvas = QuicklookCanvas(quicklook, height, width)
    assert canvas.step == step and canvas.shape == expected.shape
    windows = [(r, c, 16, 24) for r in range(0, height, 16) for c in range(0, width, 24)]
    for i in rng.permutation(len(windows)):
        r, c, h, w = windows[i]
        canvas.add(classes[:, r : r + h, c : c + w], r, c)
    np.testing.assert_array_equal(canvas.image[0], expected)
    image, palette = _png(canvas.png())
    np.testing.assert_array_equal(image[0], expected)
    assert palette[0] == (0, 0, 0, 0) and all(palette[v][3] == 255 for v in range(1, 12))


def test_class_palette_keeps_the_maps_colours_and_gives_the_others_one():
    palette = class_palette({0: (9, 9, 9, 255), 1: (10, 20, 30, 255)}, [1, 2, 3])
    assert palette[0] == (0, 0, 0, 0) and palette[1] == (10, 20, 30, 255)
    assert palette[2] != palette[3] and palette[2][3] == palette[3][3] == 255


def test_a_quicklook_is_a_false_colour_or_a_palette():
    with pytest.raises(ValueError, match="either"):
        Quicklook("embedding")
    with pytest.raises(ValueError, match="either"):
        Quicklook("x", basis=PcaBasis.fit(np.eye(3)), colormap={0: (0, 0, 0, 0)})


def test_png_bytes_are_rgba_or_a_palette_gdal_reads_back():
    rgba = np.random.default_rng(7).integers(0, 256, (4, 5, 7)).astype(np.uint8)
    image, palette = _png(png_bytes(rgba))
    np.testing.assert_array_equal(image, rgba)
    assert palette is None


def test_the_legend_is_svg_text_of_every_class():
    classes = [
        {"value": 0, "name": "nodata", "nodata": True},
        {"value": 1, "name": "a_b", "title": "wheat & barley", "color_hint": "E6BE3C"},
        {"value": 7, "name": "water", "color_hint": "1F78B4"},
    ]
    root = ET.fromstring(legend_svg(classes))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["Classes", "1  wheat & barley", "7  water"]
    fills = [r.get("fill") for r in root.iter("{http://www.w3.org/2000/svg}rect")][1:]  # after the background
    assert fills == ["#E6BE3C", "#1F78B4"]


def test_a_run_across_two_zones_is_drawn_on_a_lon_lat_grid(tmp_path):
    """Tiles of zones 32 and 33 on both sides of 12 E: each tile's quicklook lands where pyproj puts its centre."""
    store, items = open_store(tmp_path / "out"), []
    products = tile_products([f"emb_{i:02d}" for i in range(3)], None)
    basis = PcaBasis.fit(np.random.default_rng(8).normal(size=(200, 3)))
    quicklooks = tile_quicklooks(products, basis, max_size=16)
    grid = TileGrid(32)
    footprint = shapely.geometry.box(-1e7, -1e7, 1e7, 1e7)
    to_utm = {epsg: Transformer.from_crs(4326, epsg, always_xy=True) for epsg in (32632, 32633)}
    colours = {}
    for epsg, lon in ((32632, 11.99), (32633, 12.01)):
        x, y = to_utm[epsg].transform(lon, 45.5)
        tile = grid.tile(epsg, int(x // 320), int(y // 320), footprint)
        rasters = RasterSet(tile, tmp_path / tile.tile_id, products, {}, quicklooks=quicklooks)
        colour = np.random.default_rng(epsg).normal(size=(3, 1, 1)) * 3  # one embedding over the whole tile
        rasters.write("embedding", np.broadcast_to(colour, (3, 32, 32)).astype(np.float32), 0, 0)
        rasters.write("qa", np.ones((1, 32, 32), np.uint16), 0, 0)
        folder = f"tiles/{tile.tile_id}/v1"
        keys = rasters.publish(
            store,
            {n: f"{folder}/{n}.tif" for n in products}
            | {n: f"{folder}/{QUICKLOOK_FILES[n]}" for n in quicklooks},
        )
        item = tile_item(
            tile, keys, products, collection="c", dates=DATES, properties={}, quicklooks=quicklooks
        )
        items.append(item)
        colours[tile] = tuple(basis.rgba(colour.astype(np.float32))[:, 0, 0])
    assets = write_run_quicklooks(store, items, max_size=64)
    asset = assets["thumbnail"]
    assert asset["proj:code"] == "EPSG:4326" and max(asset["proj:shape"]) == 64
    image, _ = _png((tmp_path / "out" / "quicklook.png").read_bytes())
    assert image.shape[1:] == tuple(asset["proj:shape"])
    to_pixel = ~Affine(*asset["proj:transform"])
    for tile, rgba in colours.items():
        x, y = (tile.bounds[0] + tile.bounds[2]) / 2, (tile.bounds[1] + tile.bounds[3]) / 2
        lon, lat = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(x, y)
        col, row = (int(v) for v in to_pixel * (lon, lat))
        assert tuple(image[:, row, col]) == rgba, tile.tile_id
    assert 0.3 < (image[3] > 0).mean() < 0.9  # two tilted squares on a lon/lat grid: the rest transparent
