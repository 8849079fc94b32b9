"""COG writing, read back with GDAL (rasterio) and validated with rio-cogeo."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from pimc_ray.cog import write_cog

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
    from pimc_ray.cog import COGWriter

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
    from pimc_ray.cog import COGWriter

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
