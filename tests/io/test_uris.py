"""Every path a URI: checkpoints, heads and labels read and written at a local path, a ``file://`` URI or in S3
(the local SeaweedFS), with the same result; objects read back with boto3, an independent client."""

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch

from pimc_ray.data.labels import GeoJSONLabels, RasterLabels
from pimc_ray.errors import CheckpointError, StorageError
from pimc_ray.io.cog import write_cog
from pimc_ray.mapping.heads import load_head, save_head
from pimc_ray.models import (
    EncoderConfig,
    EncoderRef,
    LinearClassifier,
    PIMCConfig,
    load_checkpoint,
    load_training_checkpoint,
    save_checkpoint,
    save_training_checkpoint,
)
from pimc_ray.models.checkpoint import sha256_file
from pimc_ray.storage import (
    content_type,
    exists,
    join_uri,
    normalize_location,
    normalize_uri,
    open_store,
    read_bytes,
    split_uri,
    write_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}, seed=4)


def s3_uri(name: str) -> str:
    """A fresh prefix in the test bucket."""
    return f"s3://pimc-test/uris-{uuid.uuid4().hex[:8]}/{name}"


def object_head(uri: str) -> dict:
    """boto3's HEAD of an ``s3://pimc-test/...`` object."""
    return boto3.client("s3").head_object(Bucket="pimc-test", Key=uri.removeprefix("s3://pimc-test/"))


def test_uri_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_uri("models/enc") == str(tmp_path / "models" / "enc")
    assert normalize_uri(f"file://{tmp_path}/a%20b/c.json") == str(tmp_path / "a b" / "c.json")
    assert normalize_uri("s3://bucket/models/enc/") == "s3://bucket/models/enc"
    assert split_uri("s3://b/models/enc/config.json") == ("s3://b/models/enc", "config.json")
    assert split_uri("s3://b/config.json") == ("s3://b", "config.json")
    assert split_uri(tmp_path / "x" / "items.ndjson") == (str(tmp_path / "x"), "items.ndjson")
    assert join_uri("s3://b/enc/", "rp", "config.json") == "s3://b/enc/rp/config.json"
    assert join_uri(f"file://{tmp_path}/enc", "rp") == str(tmp_path / "enc" / "rp")
    with pytest.raises(StorageError, match="names a bucket, not an object"):
        split_uri("s3://b")


def test_an_output_inside_a_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        StorageError, match=r"^--out .*afile/sub is inside .*afile, which is a file, not a folder"
    ):
        normalize_location(tmp_path / "afile" / "sub")
    with pytest.raises(StorageError, match=r"afile is a file, not a folder"):
        normalize_location(tmp_path / "afile")
    assert normalize_location(tmp_path / "new" / "sub") == str(tmp_path / "new" / "sub")


def test_single_objects_at_a_path_a_file_uri_and_in_s3(s3, tmp_path):
    for uri in (tmp_path / "a" / "x.json", f"file://{tmp_path}/b/x.json", s3_uri("x.json")):
        assert not exists(uri)
        with pytest.raises(StorageError, match=f"{uri} does not exist"):
            read_bytes(uri)
        written = write_bytes(b'{"k": 1}', uri)
        assert exists(uri) and read_bytes(written) == read_bytes(uri) == b'{"k": 1}'
    assert read_bytes(tmp_path / "b" / "x.json") == b'{"k": 1}'  # the file:// URI wrote a plain file
    assert object_head(written)["ContentType"] == "application/json"


def test_an_aoi_file_in_s3(s3):
    from pimc_ray.data.aoi import load_aoi

    box = {
        "type": "Polygon",
        "coordinates": [[[11.8, 45.4], [12.0, 45.4], [12.0, 45.6], [11.8, 45.6], [11.8, 45.4]]],
    }
    uri = write_bytes(json.dumps(box).encode(), s3_uri("areas/aoi.geojson"))
    assert load_aoi(uri).bounds == load_aoi(json.dumps(box)).bounds == (11.8, 45.4, 12.0, 45.6)


def tensors_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_checkpoint_in_s3_loads_to_the_tensors_on_disk(s3, tmp_path):
    model = SMALL.build()
    local = save_checkpoint(tmp_path / "enc", model, SMALL, extra={"step": 7})
    remote = save_checkpoint(s3_uri("models/enc"), model, SMALL, extra={"step": 7})
    assert remote.startswith("s3://pimc-test/") and not remote.endswith("/")
    from_disk, meta_disk = load_checkpoint(local, expect=SMALL)
    from_s3, meta_s3 = load_checkpoint(remote, expect=SMALL)
    assert meta_s3 == meta_disk and meta_s3["step"] == 7
    disk, cloud = tensors_of(from_disk), tensors_of(from_s3)
    assert disk.keys() == cloud.keys() and all(torch.equal(disk[k], cloud[k]) for k in disk)
    for name in ("model.safetensors", "config.json"):
        assert object_head(join_uri(remote, name))["ContentType"] == content_type(name)
        assert sha256_file(join_uri(remote, name)) == sha256_file(Path(local, name))

    ref = EncoderRef.open(remote)
    assert ref.checkpoint == remote and ref.config == SMALL
    assert ref.load()[1] == EncoderRef.open(local).load()[1] == f"checkpoint sha256:{meta_disk['sha256']}"

    # a corrupt object is refused as a corrupt file is
    write_bytes(
        read_bytes(join_uri(remote, "model.safetensors"))[:-10], join_uri(remote, "model.safetensors")
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(remote)
    with pytest.raises(CheckpointError, match="has no config.json"):
        EncoderRef.open(s3_uri("nothing"))


def test_another_process_loads_the_encoder_from_s3_alone(s3, tmp_path):
    """What a Ray worker on another node does: nothing of the driver's disk, only the URI and the environment."""
    model = SMALL.build().eval()
    remote = save_checkpoint(s3_uri("models/enc"), model, SMALL)
    x = torch.rand(2, 3, 12, 12)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; from pimc_ray.models import EncoderRef\n"
        "model, label = EncoderRef.open(sys.argv[1]).load()\n"
        "with torch.no_grad(): torch.save(model(torch.load(sys.argv[2])), sys.argv[3])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, remote, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), model(x))


def test_a_training_checkpoint_round_trips_through_s3(s3):
    tiny = PIMCConfig(
        rp=SMALL,
        rsi=EncoderConfig(
            name="rsi-cnn", params={"in_channels": 10, "patch_size": 3, "widths": [8], "embed_dim": 8}
        ),
        projection={"name": "mlp", "params": {"out_dim": 8, "hidden": 16}},
    )
    model = tiny.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(4, 3, 12, 12), torch.rand(4, 10, 3, 3)).backward()
    optimizer.step()
    remote = save_training_checkpoint(s3_uri("runs/step_00000001"), model, optimizer, step=1)
    state = load_training_checkpoint(remote, expect=tiny)
    assert state.step == 1
    for (name, a), b in zip(model.state_dict().items(), state.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def fitted_head() -> tuple[LinearClassifier, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 8)) + np.repeat(np.eye(3, 8) * 4, 30, axis=0)
    head = LinearClassifier(8, [1, 4, 9], {1: "a", 4: "b", 9: "c"}, {4: "00ff00"}).fit(
        x, np.repeat([1, 4, 9], 30)
    )
    return head, x


def test_a_head_round_trips_through_s3(s3, tmp_path):
    head, x = fitted_head()
    remote = head.save(s3_uri("heads/h1"))
    local = head.save(f"file://{tmp_path}/h1")
    assert local == str(tmp_path / "h1")
    for loaded in (LinearClassifier.load(remote), LinearClassifier.load(local)):
        np.testing.assert_array_equal(loaded.predict(x)[0], head.predict(x)[0])
        assert loaded.class_names == head.class_names and loaded.colormap() == head.colormap()
    # the mapping job's key hashes the head's weights wherever they are
    assert (
        sha256_file(join_uri(remote, "head.safetensors"))
        == hashlib.sha256((tmp_path / "h1" / "head.safetensors").read_bytes()).hexdigest()
    )
    # a run keeps the head it fit in its output store
    store = open_store(s3_uri("run"))
    assert load_head(store, "head") is None
    save_head(head, store, "head")
    np.testing.assert_array_equal(load_head(store, "head").predict(x)[0], head.predict(x)[0])
    assert store.list("head/") == ["head/head.json", "head/head.safetensors"]
    with pytest.raises(CheckpointError, match="no head.json and no head.safetensors"):
        LinearClassifier.load(s3_uri("heads/none"))


def test_labels_from_s3_are_the_labels_on_disk(s3, tmp_path):
    points = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [11.9, 45.5]},
                "properties": {"class": c},
            }
            for c in ("wheat", "maize")
        ],
    }
    local = tmp_path / "labels.geojson"
    local.write_text(json.dumps(points))
    remote = write_bytes(local.read_bytes(), s3_uri("labels/points.geojson"))
    assert object_head(remote)["ContentType"] == "application/geo+json"
    on_disk, in_s3 = GeoJSONLabels.load(local), GeoJSONLabels.load(remote)
    assert in_s3.ids == on_disk.ids == (2, 1) and in_s3.names == on_disk.names == {1: "maize", 2: "wheat"}

    import shapely.geometry
    from affine import Affine

    from pimc_ray.data.tiles import OutputGrid

    classes = (np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64) % 5) + 1
    transform = Affine(10, 0, 700000, 0, -10, 5000000)
    raster = write_cog(tmp_path / "labels.tif", classes, transform=transform, epsg=32632, nodata=0)
    remote_raster = write_bytes(raster.read_bytes(), s3_uri("labels/classes.tif"))
    bounds = (700000.0, 4999360.0, 700640.0, 5000000.0)
    grid = OutputGrid(32632, bounds, 10.0, shapely.geometry.box(*bounds))
    window = next(iter(grid.windows(64)))
    from_s3 = RasterLabels(remote_raster).read(grid, window)
    np.testing.assert_array_equal(from_s3, RasterLabels(str(raster)).read(grid, window))
    np.testing.assert_array_equal(from_s3, classes[0])  # the same grid: the pixels as written
    assert RasterLabels(remote_raster).area().bounds == RasterLabels(str(raster)).area().bounds
