"""Plans: the tile grid's tiles, items against an actual search, hours and costs by hand, Europe against the area
arithmetic, and every refusal as one line, exit code 2 and nothing written."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import shapely

from pimc_ray.cli import main
from pimc_ray.data.stac import search_items
from pimc_ray.data.tiles import TileGrid
from pimc_ray.errors import EXIT_BAD_INPUT, CatalogUnreachableError, InvalidConfigError
from pimc_ray.local._service import free_port
from pimc_ray.runs import RunSpec, area_km2
from pimc_ray.runs.plan import (
    CPU_PIXELS_PER_SECOND,
    READ_PIXELS_PER_CPU_SECOND,
    Prices,
    Throughput,
    plan_run,
    write_plan,
)
from pimc_ray.storage import read_bytes

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "infra" / "specs" / "sample-mini-continent.yaml"
TODAY = dt.date(2026, 11, 30)
#: A STAC API that is never asked (plans without items).
OFFLINE = "http://127.0.0.1:7822"


def mini(url: str, **changes: object) -> RunSpec:
    """The sample archive's spec, searching the STAC API at ``url``."""
    spec = RunSpec.load(MINI)
    spec = spec.model_copy(update={"catalog": spec.catalog.model_copy(update={"stac_url": url})})
    return RunSpec.from_mapping({**spec.model_dump(mode="json", exclude_defaults=True), **changes})


def spec_file(tmp_path: Path, url: str, **changes: object) -> Path:
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(mini(url, **changes).to_yaml())
    return path


def plan_cli(*args: str) -> int:
    return main(["run", "plan", *map(str, args)])


# --- the sample archive -------------------------------------------------------------------------------------


def test_the_sample_spec_plans_the_grids_tiles_and_its_items(stac_api, tmp_path):
    spec = mini(stac_api.url)
    region = spec.aoi()
    plan = plan_run(spec, today=TODAY, sample_tiles=100, progress=lambda _: None)
    tiles = TileGrid(spec.tile_size).tiles(region)
    assert list(plan.tiles.tile_ids) == [t.tile_id for t in tiles]
    assert len({i[:3] for i in plan.tiles.tile_ids}) == 2  # 32N and 33N
    # pixels: the region's area in each tile, against the pixel centres inside it
    centres = [int(t.inside(t.windows(t.shape[0])[0]).sum()) for t in tiles]
    assert plan.pixels == pytest.approx(sum(centres), rel=2e-3)
    assert plan.tiles.pixels == pytest.approx(centres, rel=0.02)
    assert plan.region_km2 == pytest.approx(area_km2(region.geometry)) and plan.outside_km2 == 0
    # every tile searched: the estimate is the search over the whole region, exactly
    items = search_items(region, spec.dates(), stac_url=stac_api.url)
    assert plan.items is not None and plan.items.method == "sampled"  # rustac reports no numberMatched
    assert plan.items.count == len(items) == 111
    assert len(plan.items.sample) == len(tiles)
    # the archive's gap between 32TQS and 33TTL: a tile without items, and 37 dates everywhere else
    assert sorted({s.acquisitions for s in plan.items.sample}) == [0, 37]
    weighted = sum(s.pixels * s.acquisitions for s in plan.items.sample) / plan.pixels
    assert plan.acquisitions == pytest.approx(weighted)
    assert plan.bytes_to_read == int(plan.pixels * plan.acquisitions * (3 * 2 + 0.25))
    # the lon/lat corners are the tiles' own
    for tile, corners, bounds in zip(tiles, plan.tiles.corners, plan.tiles.bounds, strict=True):
        assert tuple(bounds) == tile.bounds
        assert shapely.Polygon(corners).intersects(region.geometry)


def test_a_sample_of_tiles_estimates_the_items(stac_api):
    spec = mini(stac_api.url)
    for n in (2, 3, 4):
        plan = plan_run(spec, today=TODAY, sample_tiles=n, progress=lambda _: None)
        assert plan.items is not None and len(plan.items.sample) == n
        assert plan.items.count == pytest.approx(111, rel=0.3), n


def test_an_api_that_counts_is_asked_once(sample_archive):
    from tests.paging_api import PagingStacApi

    items = sample_archive.read_items("sentinel-2-l2a")
    with PagingStacApi(items, page_size=50, number_matched=True) as api:
        plan = plan_run(mini(api.url), today=TODAY, sample_tiles=1, progress=lambda _: None)
    assert plan.items is not None and plan.items.method == "counted" and plan.items.count == len(items)
    assert plan.acquisitions == 37  # the paging API filters by collection only: every date


def test_hours_and_cost_by_hand():
    spec = mini(OFFLINE, resources={"workers": 3, "cpus_per_worker": 1.5, "read_cpus": 0.5})
    plan = plan_run(spec, today=TODAY, count_items=False, prices=Prices(0.1, 2.0))
    rate = 3 * 2.0 * CPU_PIXELS_PER_SECOND
    assert plan.bound == "cpu" and plan.pixels_per_second == pytest.approx(rate)
    assert plan.wall_hours == pytest.approx(plan.pixels / rate / 3600)
    assert plan.cpu_hours == pytest.approx(plan.wall_hours * 3 * 2.0) and plan.gpu_hours == 0
    assert plan.cost == pytest.approx(plan.cpu_hours * 0.1)
    assert plan.acquisitions == pytest.approx(365 / 5) and plan.items is None
    # a GPU worker whose two CPUs cannot read as fast as its GPU embeds: reading bounds it
    gpu = mini(OFFLINE, resources={"workers": 4, "cpus_per_worker": 1, "read_cpus": 1, "gpus_per_worker": 1})
    read_bound = plan_run(gpu, today=TODAY, count_items=False, prices=Prices(0.1, 2.0))
    assert read_bound.bound == "read"
    assert read_bound.pixels_per_second == pytest.approx(4 * 2 * READ_PIXELS_PER_CPU_SECOND)
    assert read_bound.gpu_hours == pytest.approx(read_bound.wall_hours * 4)
    assert read_bound.cost == pytest.approx(read_bound.cpu_hours * 0.1 + read_bound.gpu_hours * 2.0)
    fast_read = Throughput(read_pixels_per_cpu_second=1e6, gpu_pixels_per_second=1e5)
    gpu_bound = plan_run(gpu, today=TODAY, count_items=False, throughput=fast_read)
    assert gpu_bound.bound == "gpu" and gpu_bound.gpu_hours == pytest.approx(gpu_bound.pixels / 1e5 / 3600)
    assert gpu_bound.cost is None  # no prices, no cost
    with pytest.raises(InvalidConfigError, match="throughput cpu_pixels_per_second must be a positive"):
        Throughput(cpu_pixels_per_second=0)
    with pytest.raises(InvalidConfigError, match="bands must be 1 to 13"):
        plan_run(spec, today=TODAY, count_items=False, bands=0)
    ten = plan_run(spec, today=TODAY, count_items=False, bands=10)  # an image-patch encoder's ten bands
    assert ten.bytes_to_read == int(plan.pixels * plan.acquisitions * 20.25)


# --- the command: writes, refusals ---------------------------------------------------------------------------


def test_pimc_run_plan_writes_the_plan_and_the_tiles(stac_api, tmp_path, capsys):
    out = tmp_path / "plan"
    assert plan_cli(spec_file(tmp_path, stac_api.url), "--out", out, "--cpu-hour-price", "0.05") == 0
    printed = capsys.readouterr().out
    assert "tiles         5 of 512 px" in printed and "budget        1 CPU-hours (within)" in printed
    plan = json.loads((out / "plan.json").read_text())
    tiles = json.loads((out / "plan_tiles.geojson").read_text())
    assert (
        plan["tiles"]["count"] == len(tiles["features"]) == 5
        and plan["tiles"]["geojson"] == "plan_tiles.geojson"
    )
    assert plan["items"]["method"] == "sampled" and plan["items"]["count"] == 111
    assert plan["cost"] == pytest.approx(plan["hours"]["cpu"] * 0.05, abs=0.01) and plan["over_budget"] == []
    region = shapely.box(11.87, 45.47, 12.045, 45.50)
    for feature in tiles["features"]:
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.intersects(region) and feature["properties"]["pixels"] > 0
        assert feature["id"] == feature["properties"]["tile_id"] and "sampled_items" in feature["properties"]


@pytest.mark.parametrize(
    ("changes", "args", "words"),
    [
        (
            {"budget": {"max_cpu_hours": 0.001}},
            [],
            "CPU-hours, over budget.max_cpu_hours 0.001; raise the cap",
        ),
        ({"budget": {"max_cost_usd": 5}}, [], "no price for its CPU-hours; pass --cpu-hour-price"),
        ({"budget": {"max_cost_usd": 0.001}}, ["--cpu-hour-price", "1"], "over budget.max_cost_usd 0.001"),
        ({"region": [10, 85, 20, 89]}, [], "lies outside Sentinel-2's coverage"),
        (
            {"region": [0.0, 45.0, 0.1, 45.1]},
            [],
            "no 'sentinel-2-l2a' items at",
        ),  # no item in the archive there
        ({"period": 2023}, [], "between 2023-01-01 and 2023-12-31; choose a period"),
        ({"period": 2014}, ["--no-items"], "ends before Sentinel-2's first acquisitions"),
        ({"period": {"start": "2099-01-01", "end": "2099-02-01"}}, ["--no-items"], "starts after today"),
        ({}, ["--sample-tiles", "0"], "--sample-tiles must be at least 1"),
        ({}, ["--gpu-hour-price", "-1"], "--gpu-hour-price must be a price of zero or more"),
    ],
)
def test_refusals_are_one_line_exit_2_and_write_nothing(stac_api, tmp_path, capsys, changes, args, words):
    out = tmp_path / "plan"
    assert plan_cli(spec_file(tmp_path, stac_api.url, **changes), "--out", out, *args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert not out.exists()


def test_an_unreachable_api_names_no_items(tmp_path, capsys):
    spec = mini(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        CatalogUnreachableError, match="cannot reach the STAC API.*; or plan without items: --no-items"
    ):
        plan_run(spec, today=TODAY, progress=lambda _: None)
    # without items, no request is made
    assert plan_run(spec, today=TODAY, count_items=False).items is None


def test_check_budget_names_every_figure_over():
    europe = RunSpec.load(ROOT / "infra" / "specs" / "europe-2024.yaml")
    plan = plan_run(europe, today=TODAY, count_items=False, prices=Prices(1.0, 100.0))
    assert plan.gpu_hours > 200 and plan.cost is not None and plan.cost > 2000
    budget = europe.budget.model_copy(update={"max_gpu_hours": 200, "max_cost_usd": 2000})
    with pytest.raises(InvalidConfigError) as caught:
        plan.check_budget(budget)
    message = str(caught.value)
    assert (
        "\n" not in message and "over budget.max_gpu_hours 200" in message and "max_cost_usd 2000" in message
    )
    assert "reading bounds its GPUs" in message  # 8 CPUs read ~96,000 px/s for a GPU that embeds ~495,000
    plan.check_budget(europe.budget.model_copy(update={"max_gpu_hours": 1e6, "max_cost_usd": 1e9}))


# --- a continent --------------------------------------------------------------------------------------------


def test_europe_tiles_agree_with_the_area_arithmetic():
    europe = RunSpec.load(ROOT / "infra" / "specs" / "europe-2024.yaml")
    plan = plan_run(europe, today=TODAY, count_items=False)
    by_area = plan.region_km2 / plan.tile_km2  # 94,356 tiles of 104.9 km² in 9.89e6 km²
    assert plan.region_km2 == pytest.approx(9.9e6, rel=0.01)
    # the coast's and the zone edges' partial tiles add about 5 %
    assert by_area < len(plan.tiles) < 1.07 * by_area
    assert plan.pixels * 1e-4 == pytest.approx(plan.region_km2, rel=0.01)  # 100 m² a pixel, in UTM
    assert len(set(plan.tiles.tile_ids)) == len(plan.tiles)
    # Sentinel-2's zones: no 32X, 34X or 36X (Svalbard is in 33X and 35X); south-western Norway in 32V
    lat = plan.tiles.corners[:, :, 1].min(axis=1)
    lon = plan.tiles.corners[:, :, 0].mean(axis=1)
    zones = plan.tiles.epsg % 100
    assert not {32, 34, 36} & set(zones[lat > 72.5]) and {33, 35} <= set(zones[lat > 76])
    assert set(zones[(lon > 4) & (lon < 6) & (lat > 57) & (lat < 63)]) == {32}


def test_a_plan_goes_to_s3(s3):
    prefix = f"s3://pimc-test/plans-{uuid.uuid4().hex[:8]}"
    plan = plan_run(mini(OFFLINE), today=TODAY, count_items=False)
    uris = write_plan(plan, prefix)
    assert uris == (f"{prefix}/plan.json", f"{prefix}/plan_tiles.geojson")
    assert json.loads(read_bytes(uris[0]))["tiles"]["count"] == 5
    assert len(json.loads(read_bytes(uris[1]))["features"]) == 5
