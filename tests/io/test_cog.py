"""COG writing, read back with GDAL (rasterio) and validated with rio-cogeo."""

import numpy as np
import pytest
import rasterio
from affine import Affine
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
