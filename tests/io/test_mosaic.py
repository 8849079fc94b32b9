"""Mosaics over tiles: GDAL reads back, through the VRT and the GTI index, exactly the tiles' pixels."""

import sqlite3

import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry

from pimc_ray.data.tiles import Tile, TileGrid
from pimc_ray.io.cog import write_cog
from pimc_ray.io.mosaic import FOOTPRINT_INSET, MosaicSource, build_gti, write_mosaics
from pimc_ray.io.rasters import RasterProduct
from pimc_ray.storage import Store, gdal_s3_env, open_store

GRID = TileGrid(size=32)
EMBEDDING = RasterProduct("embedding", "float32", float("nan"), ("emb_00", "emb_01", "emb_02"), "embedding")
CLASSES = RasterProduct(
    "classes",
    "uint8",
    0,
    ("class_id", "confidence_pct"),
    "classes",
    colormap={1: (0, 128, 0, 255), 3: (0, 0, 255, 255)},
)
PRODUCTS = {"embedding": EMBEDDING, "classes": CLASSES}


def tiles_of(epsg: int, cells: list[tuple[int, int]]) -> list[Tile]:
    everywhere = shapely.geometry.box(-1e7, -1e7, 1e7, 1e7)
    return [GRID.tile(epsg, col, row, everywhere) for col, row in cells]


def tile_data(product: RasterProduct, seed: int) -> np.ndarray:
    """Seeded pixels of one tile, with some nodata, (band, y, x)."""
    rng = np.random.default_rng(seed)
    shape = (len(product.bands), GRID.size, GRID.size)
    if product.dtype == "uint8":
        # as the mapping job writes classes: the confidence is 0 only where the class is nodata (0)
        class_id = rng.integers(0, 4, shape[1:], dtype=np.uint8)
        confidence = np.where(class_id > 0, rng.integers(1, 101, shape[1:]), 0).astype(np.uint8)
        return np.stack([class_id, confidence])
    data = rng.standard_normal(shape).astype(np.float32)
    data[rng.random(shape) < 0.1] = np.nan  # each band its own nodata pixels
    return data


def publish_tiles(store: Store, tiles: list[Tile], tmp_path) -> dict[tuple[str, str], np.ndarray]:
    """Write every product of every tile as a COG under ``tiles/<id>/<product>.tif``; returns the pixels."""
    pixels = {}
    for i, tile in enumerate(tiles):
        for name, product in PRODUCTS.items():
            data = tile_data(product, seed=i)
            local = write_cog(
                tmp_path / "cogs" / tile.tile_id / f"{name}.tif",
                data,
                transform=tile.transform,
                epsg=tile.epsg,
                nodata=product.nodata,
                band_descriptions=product.bands,
                colormap=product.colormap,
            )
            store.put_file(local, f"tiles/{tile.tile_id}/{name}.tif")
            pixels[tile.tile_id, name] = data
    return pixels


def expected_mosaic(tiles: list[Tile], pixels, name: str) -> np.ndarray:
    """The tiles' pixels placed on the zone's grid by hand; nodata where no tile is."""
    product = PRODUCTS[name]
    xmin = min(t.bounds[0] for t in tiles)
    ymax = max(t.bounds[3] for t in tiles)
    width = round((max(t.bounds[2] for t in tiles) - xmin) / GRID.resolution)
    height = round((ymax - min(t.bounds[1] for t in tiles)) / GRID.resolution)
    out = np.full((len(product.bands), height, width), product.nodata, dtype=product.dtype)
    for t in tiles:
        col = round((t.bounds[0] - xmin) / GRID.resolution)
        row = round((ymax - t.bounds[3]) / GRID.resolution)
        out[:, row : row + GRID.size, col : col + GRID.size] = pixels[t.tile_id, name]
    return out


def assert_mosaic(path: str, tiles: list[Tile], pixels, name: str) -> None:
    product = PRODUCTS[name]
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == tiles[0].epsg
        assert src.descriptions == product.bands
        assert src.dtypes == (product.dtype,) * len(product.bands)
        np.testing.assert_array_equal(src.nodatavals, [product.nodata] * len(product.bands))  # NaN == NaN
        xmin, ymax = min(t.bounds[0] for t in tiles), max(t.bounds[3] for t in tiles)
        assert src.transform == rasterio.Affine(GRID.resolution, 0, xmin, 0, -GRID.resolution, ymax)
        if product.colormap:
            colormap = src.colormap(1)
            assert all(colormap[k] == v for k, v in product.colormap.items())
        data = src.read()
    np.testing.assert_array_equal(data, expected_mosaic(tiles, pixels, name))  # NaNs in the same places too


# an L of three tiles (the fourth cell of the 2 x 2 block is missing) in zone 32N, one tile in zone 33N
L_TILES = tiles_of(32632, [(100, 500), (101, 500), (100, 501)])
ZONE_33 = tiles_of(32633, [(40, 500)])


def test_gti_index_reads_the_tiles_pixels_from_any_working_directory(tmp_path, monkeypatch):
    store = open_store(tmp_path / "out")
    pixels = publish_tiles(store, L_TILES + ZONE_33, tmp_path)
    keys = write_mosaics(store, L_TILES + ZONE_33, PRODUCTS, kind="gti")
    assert keys == [
        "mosaic_embedding_epsg32632.gti.gpkg",
        "mosaic_classes_epsg32632.gti.gpkg",
        "mosaic_embedding_epsg32633.gti.gpkg",
        "mosaic_classes_epsg32633.gti.gpkg",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the index resolves the tiles' paths against its own folder, not the working directory
    monkeypatch.chdir(elsewhere)
    for name in PRODUCTS:
        with rasterio.open(store.gdal_path(f"mosaic_{name}_epsg32632.gti.gpkg")) as src:
            assert src.driver == "GTI"
        assert_mosaic(store.gdal_path(f"mosaic_{name}_epsg32632.gti.gpkg"), L_TILES, pixels, name)
        assert_mosaic(f"../out/mosaic_{name}_epsg32633.gti.gpkg", ZONE_33, pixels, name)
    # the output folder moved elsewhere: still valid
    (tmp_path / "out").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "mosaic_embedding_epsg32632.gti.gpkg"
    assert_mosaic(str(moved), L_TILES, pixels, "embedding")


def test_auto_writes_a_vrt_too_for_small_zones_and_both_read_the_same(tmp_path):
    store = open_store(tmp_path / "out")
    pixels = publish_tiles(store, L_TILES + ZONE_33, tmp_path)
    keys = write_mosaics(store, L_TILES + ZONE_33, {"embedding": EMBEDDING}, vrt_max_tiles=2)
    assert keys == [  # zone 32N has 3 tiles: no VRT
        "mosaic_embedding_epsg32632.gti.gpkg",
        "mosaic_embedding_epsg32633.vrt",
        "mosaic_embedding_epsg32633.gti.gpkg",
    ]
    assert write_mosaics(store, L_TILES, PRODUCTS, kind="vrt") == [
        "mosaic_embedding_epsg32632.vrt",
        "mosaic_classes_epsg32632.vrt",
    ]
    for name in PRODUCTS:
        assert_mosaic(store.gdal_path(f"mosaic_{name}_epsg32632.vrt"), L_TILES, pixels, name)
    with pytest.raises(ValueError, match="kind must be"):
        write_mosaics(store, L_TILES, PRODUCTS, kind="cog")  # type: ignore[arg-type]


def test_gti_index_reads_every_window_right(tmp_path):
    """Windows of the mosaic, tile-aligned or not, read the tiles' pixels (GDAL's GTI driver read nodata where a
    tile whose footprint only touched the window came first in the index, until footprints were inset)."""
    tiles = L_TILES + tiles_of(32632, [(102, 500), (102, 501), (101, 502), (100, 499)])
    store = open_store(tmp_path / "out")
    pixels = publish_tiles(store, tiles, tmp_path)
    write_mosaics(store, tiles, PRODUCTS, kind="gti")
    for name in PRODUCTS:
        expected = expected_mosaic(tiles, pixels, name)
        with rasterio.open(store.gdal_path(f"mosaic_{name}_epsg32632.gti.gpkg")) as src:
            height, width = src.shape
            for row in range(0, height, GRID.size // 2):
                for col in range(0, width, GRID.size // 2):
                    for h, w in [
                        (GRID.size, GRID.size),
                        (GRID.size // 2, GRID.size // 2),
                        (GRID.size, 2 * GRID.size),
                    ]:
                        h, w = min(h, height - row), min(w, width - col)
                        got = src.read(window=((row, row + h), (col, col + w)))
                        want = expected[:, row : row + h, col : col + w]
                        np.testing.assert_array_equal(got, want, err_msg=f"{name}, window {row, col, h, w}")


def test_gti_index_is_a_geopackage_with_the_tiles_footprints(tmp_path):
    sources = [MosaicSource(f"tiles/{t.tile_id}/embedding.tif", t.bounds) for t in L_TILES]
    layout = {"epsg": 32632, "resolution": GRID.resolution, "count": 3, "dtype": "float32"}
    path = build_gti(tmp_path / "m.gti.gpkg", sources, **layout, nodata=float("nan"), band_descriptions="abc")
    with pytest.raises(FileExistsError):
        build_gti(path, sources, **layout, nodata=float("nan"), band_descriptions="abc")
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA application_id").fetchone() == (0x47504B47,)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = con.execute("SELECT fid, geom, location FROM tiles ORDER BY fid").fetchall()
        assert [r[2] for r in rows] == [s.path for s in sources]
        inset = FOOTPRINT_INSET * GRID.resolution
        for (fid, blob, _), s in zip(rows, sources, strict=True):
            assert blob[:2] == b"GP"
            geometry = shapely.from_wkb(blob[40:])  # after the 8-byte header and the 4-double envelope
            footprint = shapely.geometry.box(*s.bounds).buffer(-inset, join_style="mitre")
            assert geometry.equals(footprint) and geometry.geom_type == "Polygon"
            box = con.execute("SELECT minx, miny, maxx, maxy FROM rtree_tiles_geom WHERE id = ?", (fid,))
            assert box.fetchone() == pytest.approx(footprint.bounds, abs=0.05)  # the R-tree holds float32
        # the R-tree follows edits (its delete trigger)
        con.execute("DELETE FROM tiles WHERE fid = 1")
        assert con.execute("SELECT count(*) FROM rtree_tiles_geom").fetchone() == (len(sources) - 1,)
    finally:
        con.close()


def test_gti_index_through_s3(s3, tmp_path):
    store = open_store("s3://pimc-test/mosaic-test")
    pixels = publish_tiles(store, L_TILES, tmp_path)
    assert write_mosaics(store, L_TILES, PRODUCTS, kind="gti") == [
        "mosaic_embedding_epsg32632.gti.gpkg",
        "mosaic_classes_epsg32632.gti.gpkg",
    ]
    with rasterio.Env(**gdal_s3_env()):
        for name in PRODUCTS:
            path = store.gdal_path(f"mosaic_{name}_epsg32632.gti.gpkg")
            assert path.startswith("/vsis3/pimc-test/mosaic-test/")
            assert_mosaic(path, L_TILES, pixels, name)


def test_gti_index_keeps_a_band_where_another_band_is_zero(tmp_path):
    """A class with a confidence of 0 stays: io.cog writes no alpha band, so GTI masks band 1 with nothing."""
    store = open_store(tmp_path / "out")
    data = np.zeros((2, GRID.size, GRID.size), np.uint8)
    data[0] = 2  # class 2, confidence 0
    for tile in L_TILES:
        local = write_cog(
            tmp_path / tile.tile_id / "classes.tif",
            data,
            transform=tile.transform,
            epsg=tile.epsg,
            nodata=0,
            colormap=CLASSES.colormap,
        )
        store.put_file(local, f"tiles/{tile.tile_id}/classes.tif")
    write_mosaics(store, L_TILES, {"classes": CLASSES}, kind="both")
    with rasterio.open(store.gdal_path("mosaic_classes_epsg32632.vrt")) as vrt:
        assert (vrt.read(1, window=((0, GRID.size), (0, GRID.size))) == 2).all()
    with rasterio.open(store.gdal_path("mosaic_classes_epsg32632.gti.gpkg")) as gti:
        assert (gti.read(1, window=((0, GRID.size), (0, GRID.size))) == 2).all()
