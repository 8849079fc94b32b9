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
