"""STAC items and collection of mapping outputs, from COGs and quicklooks written and published by a RasterSet as
a tile's are.

Checked against independent references: stac-validator with the official core and extension schemas (vendored
in tests/fixtures/stac-extension-schemas), hashlib and the file system on the bytes published, NumPy on the
rasters GDAL reads back, GDAL's nearest-neighbour resampling of the COGs for the quicklooks, and the head whose
classes the class map holds. A broken field of each extension must fail validation, so that the validator is seen
to check them.
"""

import copy
import datetime as dt
import hashlib
import json
import warnings

import numpy as np
import pytest
import rasterio
import shapely.geometry
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

from pimc_ray.data.tiles import TileGrid
from pimc_ray.io.quicklooks import PcaBasis, write_run_quicklooks
from pimc_ray.io.rasters import RasterSet
from pimc_ray.io.stac_items import LICENSE_LINK, MLM, ModelCard, output_collection, slim_item, tile_item
from pimc_ray.mapping.maps import QUICKLOOK_FILES, run_items, tile_products, tile_quicklooks
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
#: The run's PCA basis of the embedding quicklooks (fit on what the windows draw from)
BASIS = PcaBasis.fit(np.random.default_rng(1).normal(size=(500, DIM)))
#: Quicklooks of at most 16 pixels a side: every third pixel of a 48-pixel tile
QUICKLOOK_SIZE = 16


def _write_tile(tile, folder, store, rng):
    """Two 16-row windows of the three products (the last 16 rows stay unwritten: nodata); returns the keys and
    the published files."""
    products = tile_products([f"emb_{i:02d}" for i in range(DIM)], HEAD)
    quicklooks = tile_quicklooks(products, BASIS, max_size=QUICKLOOK_SIZE)
    rasters = RasterSet(tile, folder, products, {"pimc_tile": tile.tile_id}, quicklooks=quicklooks)
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
    keys = rasters.publish(
        store,
        {name: f"tiles/{tile.tile_id}/v1/{name}.tif" for name in products}
        | {name: f"tiles/{tile.tile_id}/v1/{QUICKLOOK_FILES[name]}" for name in quicklooks},
    )
    return products, keys, rasters.files, quicklooks


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
        products, keys, files, quicklooks = _write_tile(tile, root / "work" / tile.tile_id, store, rng)
        item = tile_item(
            tile,
            keys,
            products,
            collection="pimc-maps",
            dates=DATES,
            properties={"pimc:model": f"checkpoint sha256:{card.weights_sha256}", "pimc:version": 1},
            files=files,
            model=card,
            quicklooks=quicklooks,
        )
        store.put_json(item, f"tiles/{tile.tile_id}/item.json")
        items.append(item)
        paths[tile.tile_id] = out / "tiles" / tile.tile_id / "item.json"
    assets = write_run_quicklooks(store, items)
    collection = output_collection(items, collection="pimc-maps", description="test run", assets=assets)
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


def test_slim_items_give_the_same_collection_and_run_quicklooks(run):
    """The driver reads a run's items many at a time and keeps all but the first slim (run_items): the
    collection and the run's quicklooks are those of the whole items, byte for byte."""
    out, items = run["out"], run["items"]
    store = open_store(out)
    read = run_items(store, [i["properties"]["pimc:tile"] for i in items])
    whole = [json.loads(json.dumps(i)) for i in items]  # as read back: lists, not tuples
    assert read[0] == whole[0] and read[1] == slim_item(whole[1])
    assert len(json.dumps(read[1])) < len(json.dumps(items[1])) / 10
    before = {p.name: p.read_bytes() for p in sorted(out.glob("quicklook*"))}
    assert before
    assets = write_run_quicklooks(store, read)
    assert (
        output_collection(read, collection="pimc-maps", description="test run", assets=assets)
        == run["collection"]
    )
    assert {p.name: p.read_bytes() for p in sorted(out.glob("quicklook*"))} == before


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
            if name == "model" or "thumbnail" in asset["roles"]:
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
    assert set(collection["item_assets"]) == {"embedding", "classes", "qa", "thumbnail", "thumbnail_classes"}
    for name, definition in collection["item_assets"].items():
        assert "href" not in definition and "file:checksum" not in definition
        if "thumbnail" in definition["roles"]:  # each tile's grid is its own
            assert not [k for k in definition if k.startswith("proj:")]
            continue
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
        ("projection", _set(["assets", "thumbnail", "proj:shape"], [16])),
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


def _nearest(path, shape):
    """A COG read by GDAL resampled to ``shape`` (nearest neighbour), as a quicklook samples it."""
    with rasterio.open(path) as src:
        assert not src.overviews(1)  # a 48-pixel COG has none: GDAL resamples the full resolution
        colormap = src.colormap(1) if src.colorinterp[0].name == "palette" else None
        return src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest), colormap


def _png(path):
    """``(bands, palette or None)`` of a PNG as GDAL reads it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            assert src.driver == "PNG"
            return src.read(), (src.colormap(1) if src.colorinterp[0].name == "palette" else None)


def test_tile_quicklooks_are_the_cogs_resampled_by_gdal(run):
    """Every third pixel of the 48-pixel tiles (the centre of each 3 x 3 cell), as GDAL's nearest neighbour picks
    it: the embedding in the basis's colours, transparent exactly where it is nodata; the classes as their ids in
    the head's colours, nodata transparent."""
    for path in run["paths"].values():
        item = json.loads(path.read_text())
        thumbnail, classes = item["assets"]["thumbnail"], item["assets"]["thumbnail_classes"]
        assert thumbnail["href"] == "./v1/quicklook.png" and classes["href"] == "./v1/quicklook_classes.png"
        assert thumbnail["proj:shape"] == classes["proj:shape"] == [16, 16]
        a, b, x0, d, e, y0 = item["properties"]["proj:transform"]
        assert thumbnail["proj:transform"] == [3 * a, b, x0, d, 3 * e, y0]  # every third pixel

        image, palette = _png(path.parent / thumbnail["href"])
        embedding, _ = _nearest(path.parent / item["assets"]["embedding"]["href"], (16, 16))
        nodata = np.isnan(embedding).any(axis=0)
        assert image.shape == (4, 16, 16) and palette is None
        assert nodata.any() and not nodata.all()
        np.testing.assert_array_equal(image[3], np.where(nodata, 0, 255))
        np.testing.assert_array_equal(image, BASIS.rgba(embedding))
        assert len(np.unique(image[:3, ~nodata].reshape(3, -1), axis=1).T) > 20  # not one colour

        ids, palette = _png(path.parent / classes["href"])
        class_map, colormap = _nearest(path.parent / item["assets"]["classes"]["href"], (16, 16))
        np.testing.assert_array_equal(ids[0], class_map[0])
        assert palette[0][3] == 0 and set(np.unique(ids[0])) == {0, 1, 2, 10}
        for value in np.unique(ids[0]):  # the PNG's colours are the COG's, which are the head's
            assert palette[int(value)] == colormap[int(value)] == HEAD.colormap()[int(value)]
        legend = {
            c["value"]: c["color_hint"].lower() for c in classes["classification:classes"] if c["value"]
        }
        assert legend == HEAD.class_colors


def test_the_runs_quicklooks_are_the_tiles_side_by_side(run):
    """Two neighbouring tiles of one zone: the run's quicklooks are theirs, left and right, on the zone's grid."""
    out, collection = run["out"], run["collection"]
    left, right = run["items"]
    for key, name in (("thumbnail", "quicklook.png"), ("thumbnail_classes", "quicklook_classes.png")):
        asset = collection["assets"][key]
        assert (asset["href"], asset["type"], asset["roles"]) == (f"./{name}", "image/png", ["thumbnail"])
        assert asset["proj:shape"] == [16, 32] and asset["proj:code"] == "EPSG:32632"
        x0, _, _, y1 = left["properties"]["proj:bbox"]
        assert (asset["proj:transform"][2], asset["proj:transform"][5]) == (x0, y1)
        image, _ = _png(out / name)
        for item, cols in ((left, slice(0, 16)), (right, slice(16, 32))):
            tile, _ = _png(out / "tiles" / item["properties"]["pimc:tile"] / item["assets"][key]["href"])
            np.testing.assert_array_equal(image[:, :, cols], tile)
    classes = collection["assets"]["thumbnail_classes"]["classification:classes"]
    assert classes == left["assets"]["thumbnail_classes"]["classification:classes"]
    legend = (out / collection["assets"]["legend_classes"]["href"]).read_text()
    assert all(name in legend for name in HEAD.class_names.values())
