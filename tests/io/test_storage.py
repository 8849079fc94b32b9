"""Output stores: a local folder and an S3 bucket (SeaweedFS, through obstore), both atomic, both readable by GDAL;
objects read back with boto3, an independent client."""

import os
import time
import uuid

import boto3
import numpy as np
import pytest
import rasterio
from affine import Affine

from pimc_ray.io.cog import write_cog
from pimc_ray.local import free_port
from pimc_ray.storage import LocalStore, S3Store, StorageError, content_type, gdal_s3_env, open_store


def test_local_store_round_trip_and_no_leftovers(tmp_path):
    store = open_store(tmp_path / "out")
    assert isinstance(store, LocalStore)
    store.put_json({"a": 1}, "x/manifest.json")
    assert store.get_json("x/manifest.json") == {"a": 1}
    assert store.get_bytes("missing") is None
    assert store.exists("x/manifest.json") and not store.exists("missing")
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["manifest.json"]
    with pytest.raises(StorageError, match="escapes"):
        store.put_bytes(b"", "../outside.txt")
    assert open_store(f"file://{tmp_path}/out").get_json("x/manifest.json") == {"a": 1}


def test_many_json_objects_come_back_in_order_with_none_for_missing_ones(tmp_path):
    store = open_store(tmp_path / "out")
    keys = [f"status/{i:04d}.json" for i in range(600)]  # more than one chunk of the thread pool
    for i, key in enumerate(keys[::2]):
        store.put_json({"i": 2 * i}, key)
    got = list(store.get_json_many(keys, threads=8))
    assert got == [{"i": i} if i % 2 == 0 else None for i in range(600)]


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("gs://b/p", "gs:// .Google Cloud Storage. is not configured"),
        ("az://container/p", "az:// .Azure Blob Storage. is not configured"),
        ("ftp://host/p", "unsupported location"),
        ("s3:///p", "names no bucket"),
        ("file://host/p", "not a host"),
    ],
)
def test_bad_locations(location, words):
    with pytest.raises(StorageError, match=words):
        open_store(location)


def test_s3_store_and_gdal_read_back(s3, tmp_path):
    prefix = f"storage-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://pimc-test/{prefix}/")
    assert isinstance(store, S3Store)
    data = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64)
    local = write_cog(
        tmp_path / "a.tif", data, transform=Affine(10, 0, 0, 0, -10, 0), epsg=32632, nodata=-1.0
    )
    store.put_file(local, "tiles/a.tif")
    store.put_json({"k": [1, 2]}, "m.json")
    (tmp_path / "q.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    store.put_file(tmp_path / "q.png", "tiles/q.png")
    big = tmp_path / "big.parquet"
    big.write_bytes(os.urandom(6 << 20))  # over the 5 MB part size: a multipart upload
    store.put_file(big, "snap/big.parquet")
    assert store.get_json("m.json") == {"k": [1, 2]} and store.get_bytes("nothing.json") is None
    assert store.exists("m.json") and not store.exists("nothing.json")
    assert store.uri("tiles/a.tif") == f"s3://pimc-test/{prefix}/tiles/a.tif"
    with rasterio.Env(**gdal_s3_env()), rasterio.open(store.gdal_path("tiles/a.tif")) as src:
        np.testing.assert_array_equal(src.read(), data)
    assert store.list("tiles/") == ["tiles/a.tif", "tiles/q.png"] and store.list("nothing/") == []
    assert store.list("") == ["m.json", "snap/big.parquet", "tiles/a.tif", "tiles/q.png"]

    client = boto3.client("s3")  # endpoint and keys from the environment
    assert (
        client.get_object(Bucket="pimc-test", Key=f"{prefix}/snap/big.parquet")["Body"].read()
        == big.read_bytes()
    )
    for key, media in (("tiles/a.tif", "image/tiff; application=geotiff; profile=cloud-optimized"),
                       ("m.json", "application/json"),
                       ("tiles/q.png", "image/png"),
                       ("snap/big.parquet", "application/vnd.apache.parquet")):  # fmt: skip
        head = client.head_object(Bucket="pimc-test", Key=f"{prefix}/{key}")
        assert head["ContentType"] == media == content_type(key)

    store.delete("m.json")
    store.delete("m.json")  # deleting what is not there is no error
    assert store.get_bytes("m.json") is None
    with pytest.raises(StorageError, match="escapes"):
        store.put_bytes(b"", "../outside.json")


def test_unusable_buckets_fail_early_and_say_what_to_check(s3, monkeypatch):
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL.*AWS_ACCESS_KEY_ID.*bucket exists"):
        open_store("s3://no-such-bucket/x")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageError, match="credentials") as refused:
        open_store("s3://pimc-test/x")
    assert "not-the-secret" not in str(refused.value)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="cannot list s3://pimc-test/x.*AWS_ENDPOINT_URL"):
        open_store("s3://pimc-test/x")
    # retried within a minute (storage._obstore_s3: 8 jittered retries from 1 s to 8 s apart, 47 s at most plus
    # the jitter; a CI run took 31.7 s), not obstore's default three minutes
    assert time.monotonic() - t0 < 75
