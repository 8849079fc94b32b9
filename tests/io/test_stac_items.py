"""STAC items and collection of mapping outputs, from COGs written and published by a RasterSet as a tile's are.

Checked against independent references: stac-validator with the official core and extension schemas (vendored
in tests/fixtures/stac-extension-schemas), hashlib and the file system on the bytes published, NumPy on the
rasters GDAL reads back, and the head whose classes the class map holds. A broken field of each extension must
fail validation, so that the validator is seen to check them.
"""

import copy
import datetime as dt
import hashlib
import json

import numpy as np
import pytest
import rasterio
import shapely.geometry

from pimc_ray.data.tiles import TileGrid
from pimc_ray.io.rasters import RasterSet
from pimc_ray.io.stac_items import LICENSE_LINK, MLM, ModelCard, output_collection, tile_item
from pimc_ray.mapping.maps import tile_products
from pimc_ray.models.heads import LinearClassifier
from pimc_ray.storage import open_store
from tests.stac_validation import schema_errors, validate

DIM, SIZE, DATES = 4, 48, (dt.date(2022, 1, 1), dt.date(2022, 12, 31))
HEAD = LinearClassifier(
    DIM,
    [1, 2, 10],
    class_names={1: "winter_cereal", 2: "summer crop", 10: "grassland"},
    class_colors={1: "e6be3c", 2: "fa7814", 10: "2ca02c"},
)


def _write_tile(tile, folder, store, rng):
    """Two 16-row windows of the three products (the last 16 rows stay unwritten: nodata); returns the keys and
    the published files."""
    products = tile_products([f"emb_{i:02d}" for i in range(DIM)], HEAD)
    rasters = RasterSet(tile, folder, products, {"pimc_tile": tile.tile_id})
    for row in (0, 16):
        emb = rng.normal(size=(DIM, 16, SIZE)).astype(np.float32)
        emb[:, :3, :5] = np.nan  # cloud: nodata in every band
        valid = np.isfinite(emb[0])
        classes = np.where(valid, rng.choice([1, 2, 10], (16, SIZE)), 0)
        percent = np.where(valid, rng.integers(34, 101, (16, SIZE)), 0)
        rasters.write("embedding", emb, row, 0)
        rasters.write("classes", np.stack([classes, percent]).astype(np.uint8), row, 0)
        rasters.write(
            "qa", np.where(valid, rng.integers(1, 30, (16, SIZE)), 0)[None].astype(np.uint16), row, 0
        )
    keys = rasters.publish(store, {name: f"tiles/{tile.tile_id}/v1/{name}.tif" for name in products})
    return products, keys, rasters.files


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run's tree: two tiles (COGs and items), the collection, and the encoder weights its model card names."""
    root = tmp_path_factory.mktemp("stac")
    weights = root / "ckpt" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(np.random.default_rng(7).bytes(3000))
    card = ModelCard(
        "rp-resnet",
        "rp-resnet",
        weights.as_uri(),
        hashlib.sha256(weights.read_bytes()).hexdigest(),
        DIM,
        (
            {
                "name": "plots",
                "description": "recurrence plots of the pixel's NDVI/EVI/SAVI series",
                "input": {
                    "shape": [-1, 3, 36, 36],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
            },
        ),  # fmt: skip
        framework_version="2.5.1+cpu",
        total_parameters=12345,
    )
    out, rng = root / "out", np.random.default_rng(0)
    store, items, paths = open_store(out), [], {}
    footprint = shapely.geometry.box(0, 0, 1, 1)
    for col in (10, 11):
        tile = TileGrid(SIZE).tile(32632, col, 1000, footprint)
        products, keys, files = _write_tile(tile, root / "work" / tile.tile_id, store, rng)
        item = tile_item(
            tile,
            keys,
            products,
            collection="pimc-maps",
            dates=DATES,
            properties={"pimc:model": f"checkpoint sha256:{card.weights_sha256}", "pimc:version": 1},
            files=files,
            model=card,
        )
        store.put_json(item, f"tiles/{tile.tile_id}/item.json")
        items.append(item)
        paths[tile.tile_id] = out / "tiles" / tile.tile_id / "item.json"
    collection = output_collection(items, collection="pimc-maps", description="test run")
    store.put_json(collection, "collection.json")
    return {"out": out, "items": items, "paths": paths, "collection": collection, "weights": weights}


def test_items_and_collection_validate_against_the_official_schemas(run):
    for path in run["paths"].values():
        valid, messages = validate(path)
        assert valid, messages
        schemas = {s for m in messages for s in m["schema"]}
        for name in ("projection", "raster", "eo", "processing", "file", "classification", "mlm"):
            assert any(f"stac-extension-schemas/{name}-v" in s for s in schemas), (name, schemas)
    valid, messages = validate(run["out"] / "collection.json")
    assert valid, messages


def test_the_collections_mlm_fields_are_valid_item_mlm_fields(run):
    """The mlm schema checks a collection's summaries and assets only: its encoder fields are checked here with
    the schema's own definition of an item's mlm fields."""
    fields = {k: v for k, v in run["collection"].items() if k.startswith("mlm:")}
    assert fields and schema_errors(fields, f"{MLM}#/$defs/mlmItemFields") == []
    assert schema_errors({**fields, "mlm:tasks": ["embedding"]}, f"{MLM}#/$defs/mlmItemFields")


def test_file_size_and_checksum_are_those_of_the_bytes_published(run):
    for tile_id, path in run["paths"].items():
        item = json.loads(path.read_text())
        for name, asset in item["assets"].items():
            if name == "model":
                continue
            data = (path.parent / asset["href"]).read_bytes()
            assert asset["file:size"] == len(data) == (path.parent / asset["href"]).stat().st_size
            assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest(), (tile_id, name)


def test_raster_statistics_are_numpys_on_the_cogs_read_back(run):
    for path in run["paths"].values():
        item = json.loads(path.read_text())
        for name, asset in item["assets"].items():
            if name == "model":
                continue
            with rasterio.open(path.parent / asset["href"]) as src:
                data, nodata = src.read().astype(np.float64), src.nodata
            for band, meta in zip(data, asset["raster:bands"], strict=True):
                valid = band[~np.isnan(band)] if np.isnan(nodata) else band[band != nodata]
                stats = meta["statistics"]
                assert stats["valid_percent"] == pytest.approx(100 * valid.size / band.size)
                assert (stats["minimum"], stats["maximum"]) == (valid.min(), valid.max())
                assert stats["mean"] == pytest.approx(valid.mean(), rel=1e-12)
                assert stats["stddev"] == pytest.approx(valid.std(), rel=1e-9)
            assert 0 < stats["valid_percent"] < 100  # the unwritten rows and the cloud are not counted


def test_classification_classes_are_the_heads(run):
    item = run["items"][0]
    band, confidence = item["assets"]["classes"]["raster:bands"]
    classes = {c["value"]: c for c in band["classification:classes"]}
    assert classes.pop(0)["nodata"] is True
    assert {v: c["title"] for v, c in classes.items()} == HEAD.class_names
    assert {v: c["color_hint"].lower() for v, c in classes.items()} == HEAD.class_colors
    assert classes[2]["name"] == "summer_crop"  # the extension's names have no spaces
    assert "classification:classes" not in confidence
    assert "classification:classes" in run["collection"]["item_assets"]["classes"]["raster:bands"][0]
    with rasterio.open(run["paths"][item["properties"]["pimc:tile"]].parent / "v1" / "classes.tif") as src:
        assert json.loads(src.tags()["pimc_classes"]) == {str(k): v for k, v in HEAD.class_names.items()}


def test_mlm_names_the_encoder_and_its_weights_by_hash(run):
    item, weights = run["items"][0], run["weights"]
    props, model = item["properties"], item["assets"]["model"]
    assert MLM in item["stac_extensions"]
    assert (props["mlm:name"], props["mlm:framework"], props["mlm:framework_version"]) == (
        "rp-resnet",
        "PyTorch",
        "2.5.1",
    )
    assert (
        props["mlm:output"][0]["result"]["shape"]
        == [-1, DIM]
        == [-1, len(item["assets"]["embedding"]["eo:bands"])]
    )
    assert props["mlm:input"][0]["input"]["shape"] == [-1, 3, 36, 36]
    assert model["href"] == weights.as_uri() and "mlm:model" in model["roles"]
    assert model["file:checksum"] == "1220" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert run["collection"]["assets"]["model"] == model


def test_collection_describes_every_product_and_links_the_licence(run):
    collection, item = run["collection"], run["items"][0]
    assert set(collection["item_assets"]) == {"embedding", "classes", "qa"}
    for name, definition in collection["item_assets"].items():
        assert "href" not in definition and "file:checksum" not in definition
        assert definition["raster:bands"] == [
            {k: v for k, v in b.items() if k != "statistics"} for b in item["assets"][name]["raster:bands"]
        ]
    assert collection["license"] == "other"
    assert LICENSE_LINK in collection["links"]
    assert [link["href"] for link in collection["links"] if link["rel"] == "item"] == [
        f"./tiles/{tile}/item.json" for tile in run["paths"]
    ]
    bboxes = np.array([i["bbox"] for i in run["items"]])
    assert collection["extent"]["spatial"]["bbox"][0] == [*bboxes[:, :2].min(0), *bboxes[:, 2:].max(0)]


CLASS_1 = ["assets", "classes", "raster:bands", 0, "classification:classes", 1]


def _set(path, value):
    def change(item):
        *parents, last = path
        node = item
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value

    return change


@pytest.mark.parametrize(
    ("extension", "change"),
    [
        ("core", _set(["properties", "start_datetime"], "last spring")),
        ("projection", _set(["properties", "proj:shape"], [48])),
        ("raster", _set(["assets", "qa", "raster:bands", 0, "data_type"], "uint12")),
        ("raster", _set(["assets", "qa", "raster:bands", 0, "statistics", "mean"], "high")),
        ("eo", _set(["assets", "qa", "eo:bands"], [])),
        ("file", _set(["assets", "qa", "file:checksum"], "sha256:ABC")),
        ("file", _set(["assets", "qa", "file:size"], -1)),
        ("classification", _set([*CLASS_1, "name"], "a b")),
        ("classification", _set([*CLASS_1, "color_hint"], "red")),
        ("processing", _set(["properties", "processing:lineage"], 42)),
        ("mlm", _set(["properties", "mlm:input"], None)),
        ("mlm", _set(["assets", "model", "roles"], ["data"])),
        ("mlm", _set(["properties", "mlm:output", 0, "result", "shape"], ["many"])),
    ],
)  # fmt: skip
def test_a_broken_field_fails_validation(run, tmp_path, extension, change):
    item = copy.deepcopy(run["items"][0])
    change(item)
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    valid, messages = validate(path)
    assert not valid, (extension, messages)
    failed = [s for m in messages if not m["valid_stac"] for s in m["schema"]]
    expected = (
        "stac-spec/v1.1.0/item.json" if extension == "core" else f"stac-extension-schemas/{extension}-v"
    )
    assert len(failed) == 1 and expected in failed[0], failed  # the extension's own schema found it


def test_a_band_without_valid_pixels_has_no_moments_and_validates(tmp_path):
    """A tile of clouds only: its COG holds nodata alone; its statistics say 0 % valid and nothing else."""
    tile = TileGrid(16).tile(32632, 3, 3000, shapely.geometry.box(0, 0, 1, 1))
    products = {"qa": tile_products([], None, with_embedding=False)["qa"]}
    rasters = RasterSet(tile, tmp_path / "work", products, {})
    rasters.write("qa", np.zeros((1, 16, 16), np.uint16), 0, 0)
    store = open_store(tmp_path / "out")
    keys = rasters.publish(store, {"qa": f"tiles/{tile.tile_id}/v1/qa.tif"})
    item = tile_item(tile, keys, products, collection="c", dates=DATES, properties={}, files=rasters.files)
    assert item["assets"]["qa"]["raster:bands"][0]["statistics"] == {"valid_percent": 0.0}
    path = tmp_path / "out" / "tiles" / tile.tile_id / "item.json"
    path.write_text(json.dumps(item))
    valid, messages = validate(path)
    assert valid, messages
