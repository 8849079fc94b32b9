"""Output stores: a local folder and an S3 bucket (SeaweedFS), both atomic, both readable by GDAL."""

import numpy as np
import pytest
import rasterio
from affine import Affine

from pimc_ray.io.cog import write_cog
from pimc_ray.io.storage import LocalStore, StorageError, gdal_s3_env, open_store


def test_local_store_round_trip_and_no_leftovers(tmp_path):
    store = open_store(tmp_path / "out")
    assert isinstance(store, LocalStore)
    store.put_json({"a": 1}, "x/manifest.json")
    assert store.get_json("x/manifest.json") == {"a": 1}
    assert store.get_bytes("missing") is None
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["manifest.json"]
    with pytest.raises(StorageError, match="escapes"):
        store.put_bytes(b"", "../outside.txt")


@pytest.mark.parametrize(("location", "words"), [("gs://b/p", "unsupported"), ("s3:///p", "names no bucket")])
def test_bad_locations(location, words):
    with pytest.raises(StorageError, match=words):
        open_store(location)


def test_s3_store_and_gdal_read_back(s3, tmp_path):
    store = open_store("s3://pimc-test/storage-test")
    data = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64)
    local = write_cog(
        tmp_path / "a.tif", data, transform=Affine(10, 0, 0, 0, -10, 0), epsg=32632, nodata=-1.0
    )
    store.put_file(local, "tiles/a.tif")
    store.put_json({"k": [1, 2]}, "m.json")
    assert store.get_json("m.json") == {"k": [1, 2]}
    assert store.uri("tiles/a.tif") == "s3://pimc-test/storage-test/tiles/a.tif"
    with rasterio.Env(**gdal_s3_env()), rasterio.open(store.gdal_path("tiles/a.tif")) as src:
        np.testing.assert_array_equal(src.read(), data)
    assert store.list("tiles/") == ["tiles/a.tif"] and store.list("nothing/") == []
    # uploads carry their media type
    for key, media in (("tiles/a.tif", "image/tiff; application=geotiff; profile=cloud-optimized"),
                       ("m.json", "application/json")):  # fmt: skip
        head = store.client.head_object(Bucket="pimc-test", Key=f"storage-test/{key}")
        assert head["ContentType"] == media
    with pytest.raises(StorageError, match="bucket exists"):
        open_store("s3://no-such-bucket/x")
