"""COG writing, read back with GDAL (rasterio) and validated with rio-cogeo."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rio_cogeo.cogeo import cog_validate

from pimc_ray.io.cog import write_cog

TRANSFORM = Affine(10.0, 0.0, 724480.0, 0.0, -10.0, 5042560.0)


def test_float_cog_round_trip(tmp_path):
    data = np.random.default_rng(0).random((5, 300, 270)).astype(np.float32)
    data[:, :7, :9] = np.nan
    path = write_cog(
        tmp_path / "emb.tif",
        data,
        transform=TRANSFORM,
        epsg=32632,
        nodata=float("nan"),
        band_descriptions=[f"emb_{i:02d}" for i in range(5)],
        tags={"pimc_weights": "random-init"},
        band_tags=[{"scale": 1}] * 5,
    )
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32632
        assert src.transform == TRANSFORM
        assert src.descriptions == tuple(f"emb_{i:02d}" for i in range(5))
        assert np.isnan(src.nodata)
        assert src.tags()["pimc_weights"] == "random-init"
        assert src.tags(1)["scale"] == "1"
        assert src.overviews(1)  # overviews were built
        np.testing.assert_array_equal(src.read(), data)
    assert [p.name for p in tmp_path.iterdir()] == ["emb.tif"]  # no temporary left


def test_class_map_with_colormap(tmp_path):
    classes = np.random.default_rng(1).integers(0, 4, (1, 64, 64)).astype(np.uint8)
    cmap = {0: (0, 0, 0, 0), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)}
    path = write_cog(tmp_path / "c.tif", classes, transform=TRANSFORM, epsg=32632, nodata=0, colormap=cmap)
    with rasterio.open(path) as src:
        assert src.colormap(1)[2] == (0, 255, 0, 255)
        assert src.nodata == 0
        np.testing.assert_array_equal(src.read(), classes)


@pytest.mark.parametrize(
    ("count", "dtype", "colormap"),
    [
        (2, "uint8", {1: (0, 128, 0, 255), 2: (1, 2, 3, 255)}),  # the classes product: class id, confidence
        (2, "uint16", {7: (1, 2, 3, 255)}),  # GDAL writes palettes of UInt16 too
        (4, "uint8", None),  # GeoTIFF's default for 4 Byte bands is RGBA
        (3, "uint8", None),  # ... and RGB for 3
    ],
)
def test_no_band_is_ever_alpha(tmp_path, count, dtype, colormap):
    """GDAL marks band 2 of a two-band palette GeoTIFF as alpha, and a GTI mosaic then masks band 1 where it is
    0: the writer unmarks it, in the COG and in its overviews, and the COG stays valid."""
    data = np.zeros((count, 600, 600), dtype)
    data[0] = 2  # band 1 set, every other band 0 (a class with a confidence of 0)
    path = write_cog(tmp_path / "c.tif", data, transform=TRANSFORM, epsg=32632, nodata=0, colormap=colormap)
    valid, errors, warnings = cog_validate(str(path), quiet=True)
    assert valid and not errors and not warnings
    with rasterio.open(path) as src:
        assert len(src.overviews(1)) == 2
        assert ColorInterp.alpha not in src.colorinterp
        if colormap:
            assert src.colorinterp == (ColorInterp.palette,) + (ColorInterp.undefined,) * (count - 1)
            assert src.colormap(1)[2 if dtype == "uint8" else 7] == colormap[2 if dtype == "uint8" else 7]
        else:
            assert src.colorinterp == (ColorInterp.gray,) + (ColorInterp.undefined,) * (count - 1)
        assert src.mask_flag_enums == ([MaskFlags.nodata],) * count  # nodata masks each band, nothing else
        assert (src.read(1) == 2).all() and (src.read_masks(1) == 255).all()
        for level in range(len(src.overviews(1))):
            with rasterio.open(path, overview_level=level) as overview:
                assert ColorInterp.alpha not in overview.colorinterp


def test_unmark_alpha_patches_every_directory_of_classic_and_big_tiffs(tmp_path):
    """GDAL's own COG driver writes the alpha mark; the patch only changes the ExtraSamples values."""
    import rasterio.shutil

    from pimc_ray.io.cog import _unmark_alpha

    part = tmp_path / "p.tif"
    with rasterio.open(
        part, "w", driver="GTiff", width=600, height=600, count=2, dtype="uint8",
        crs="EPSG:32632", transform=TRANSFORM, nodata=0, tiled=True,
    ) as dst:  # fmt: skip
        dst.write_colormap(1, {1: (0, 128, 0, 255)})
        dst.write(np.stack([np.ones((600, 600), np.uint8), np.zeros((600, 600), np.uint8)]))
    for bigtiff in ("NO", "YES"):
        cog = tmp_path / f"c_{bigtiff}.tif"
        rasterio.shutil.copy(part, cog, driver="COG", BIGTIFF=bigtiff, BLOCKSIZE=256)
        with rasterio.open(cog) as src:
            assert src.colorinterp[1] == ColorInterp.alpha  # what GDAL writes (if this fails, GDAL changed)
        size = cog.stat().st_size
        assert _unmark_alpha(cog) == 3  # the full resolution and its two overviews
        assert _unmark_alpha(cog) == 0
        assert cog.stat().st_size == size and cog_validate(str(cog), quiet=True)[0]
        with rasterio.open(cog) as src:
            assert src.colorinterp == (ColorInterp.palette, ColorInterp.undefined)
            assert (src.read(1) == 1).all()


def test_bad_shape_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="bands, y, x"):
        write_cog(tmp_path / "x.tif", np.zeros((4, 4)), transform=TRANSFORM, epsg=32632, nodata=0)
    assert list(tmp_path.iterdir()) == []


def test_windowed_writer_assembles_blocks_and_keeps_metadata(tmp_path):
    from pimc_ray.io.cog import COGWriter

    rng = np.random.default_rng(2)
    full = rng.integers(1, 200, (2, 300, 500)).astype(np.uint16)
    cmap = {0: (0, 0, 0, 0), 7: (1, 2, 3, 255)}
    with COGWriter(
        tmp_path / "w.tif",
        height=300,
        width=500,
        count=2,
        dtype="uint16",
        transform=TRANSFORM,
        epsg=32633,
        nodata=0,
        band_descriptions=["a", "b"],
        tags={"k": "v"},
        band_tags=[{"scale": 0.5}, {"scale": 2}],
        colormap=cmap,
    ) as writer:
        for row in range(0, 300, 128):
            for col in range(0, 500, 128):
                if (row, col) != (128, 256):  # leave one block unwritten
                    writer.write(full[:, row : row + 128, col : col + 128], row, col)
    assert [p.name for p in tmp_path.iterdir()] == ["w.tif"]
    assert cog_validate(str(tmp_path / "w.tif"), quiet=True)[0]
    with rasterio.open(tmp_path / "w.tif") as src:
        got = src.read()
        assert src.descriptions == ("a", "b") and src.tags()["k"] == "v" and src.tags(2)["scale"] == "2"
        assert src.colormap(1)[7] == (1, 2, 3, 255)
        assert src.crs.to_epsg() == 32633 and src.nodata == 0
    expected = full.copy()
    expected[:, 128:256, 256:384] = 0  # the unwritten block reads as nodata
    np.testing.assert_array_equal(got, expected)


def test_windowed_writer_refuses_blocks_outside_and_aborts_cleanly(tmp_path):
    from pimc_ray.io.cog import COGWriter

    with pytest.raises(ValueError, match="outside"):
        with COGWriter(
            tmp_path / "x.tif",
            height=10,
            width=10,
            count=1,
            dtype="float32",
            transform=TRANSFORM,
            epsg=32632,
            nodata=float("nan"),
        ) as writer:
            writer.write(np.zeros((1, 5, 5), np.float32), 8, 0)
    assert list(tmp_path.iterdir()) == []


def test_float_tile_with_unwritten_blocks_reads_nan_there_and_stays_sparse(tmp_path):
    """Tiles mostly outside an AOI: blocks never written stay absent from the COG and read back as NaN."""
    from pimc_ray.io.cog import COGWriter

    block = np.random.default_rng(3).random((3, 256, 256)).astype(np.float32)
    with COGWriter(
        tmp_path / "e.tif", height=1024, width=1024, count=3, dtype="float32",
        transform=TRANSFORM, epsg=32632, nodata=float("nan"),
    ) as writer:  # fmt: skip
        writer.write(block, 256, 512)
    path = tmp_path / "e.tif"
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        got = src.read()
        overview = src.read(1, out_shape=(256, 256))
        offsets = [
            src.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1) for r in range(4) for c in range(4)
        ]
    np.testing.assert_array_equal(got[:, 256:512, 512:768], block)
    got[:, 256:512, 512:768] = np.nan
    assert np.isnan(got).all()
    assert np.isfinite(overview[64:128, 128:192]).all() and np.isnan(overview[:64]).all()
    assert sum(1 for o in offsets if o not in (None, "0", "")) == 1  # only the written block is stored


def test_cog_conversion_gets_its_block_cache_in_bytes(tmp_path, monkeypatch):
    """rasterio.Env takes GDAL_CACHEMAX in bytes: passing megabytes gave GDAL a 64-byte cache (2.4x slower)."""
    import pimc_ray.io.cog as cog

    seen = []
    real_env = cog.rasterio.Env

    def spy(**options):
        seen.append(options)
        return real_env(**options)

    monkeypatch.setattr(cog.rasterio, "Env", spy)
    with cog.COGWriter(
        tmp_path / "c.tif", height=16, width=16, count=1, dtype="uint8",
        transform=TRANSFORM, epsg=32632, nodata=0, gdal_cache_mb=64,
    ) as writer:  # fmt: skip
        writer.write(np.ones((1, 16, 16), np.uint8), 0, 0)
    assert [o["GDAL_CACHEMAX"] for o in seen if "GDAL_CACHEMAX" in o] == [64 * 1024 * 1024]
