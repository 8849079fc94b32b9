"""Run specs: the example specs load, a spec and the mapping job's command line say the same run, periods resolve
to hand-computed dates, named regions have their known areas, and every mistake is one line naming the key."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
import uuid
from importlib import resources
from pathlib import Path

import pytest
import shapely
import yaml
from pyproj import Transformer

from pimc_ray.cli.args import series_spec
from pimc_ray.cli.jobs import embed_parser
from pimc_ray.data.aoi import load_aoi
from pimc_ray.errors import EXIT_BAD_INPUT, InvalidConfigError
from pimc_ray.runs import RunSpec, area_km2, describe, region_geometry
from pimc_ray.runs.spec import FLAGS
from pimc_ray.storage import write_bytes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "infra" / "specs").glob("*.yaml"))
MINIMAL = {
    "region": "France",
    "period": 2022,
    "catalog": {"stac_url": "http://127.0.0.1:7822"},
    "output": "s3://b/o",
}


def spec(**changes: object) -> RunSpec:
    return RunSpec.from_mapping({**MINIMAL, **changes})


def round_trip(s: RunSpec, today: dt.date | None = None) -> RunSpec:
    """The spec read back from its command line, as the job's own parser reads it."""
    return RunSpec.from_args(
        s.to_args(today=today),
        parser=embed_parser(),
        embedding=s.products.embedding,
        indices=s.products.indices,
        name=s.name,
        budget=s.budget,
    )


# --- the example specs --------------------------------------------------------------------------------------


def test_the_examples_are_there():
    assert {p.name for p in EXAMPLES} >= {"europe-2024.yaml", "sample-mini-continent.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_load_and_describe(path):
    s = RunSpec.load(path)
    assert s.name == path.stem
    text = describe(s)
    assert "km²" in text and str(s.dates().start) in text and s.output in text
    assert f"python jobs/{s.mapping_job}" in text


def test_europe_example():
    s = RunSpec.load(ROOT / "infra" / "specs" / "europe-2024.yaml")
    assert s.region.name == "Europe"
    assert (s.dates().start, s.dates().end) == (dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert s.resources.gpus_per_worker == 1 and s.budget.max_gpu_hours == 400


def test_mini_continent_covers_the_sample_tiles():
    from pimc_ray.local.archive_grid import ArchiveSpec
    from pimc_ray.local.areas import tile_bbox

    s = RunSpec.load(ROOT / "infra" / "specs" / "sample-mini-continent.yaml")
    region = s.aoi().geometry
    for tile in ("32TQR", "32TQS", "33TTL"):
        assert region.contains(shapely.box(*(float(v) for v in tile_bbox(tile, ArchiveSpec()).split(",")))), (
            tile
        )
    assert s.catalog.stac_url == "http://127.0.0.1:7822"


# --- spec <-> command line ----------------------------------------------------------------------------------

CASES = {
    "named region, season": dict(period="2022-summer"),
    "ISO code, explicit range": dict(region="fra", period={"start": "2022-03-05", "end": "2022-10-31"}),
    "bbox, classes with a head": dict(
        region=[11.87, 45.47, 12.045, 45.5],
        model="s3://b/models/enc",
        products={"classes": {"head": "s3://b/models/enc/head", "labels_collection": "mine"}},
    ),
    "GeoJSON URI, classes only, every option": dict(
        region="s3://b/areas/aoi.geojson",
        products={"embedding": False, "classes": {"train_aoi": "Luxembourg"}},
        catalog={
            "stac_url": "https://x.org/v1",
            "collection": "c",
            "convention": "planetary-computer",
            "max_cloud_cover": 42.5,
            "snapshot": "s3://b/items.parquet",
        },
        tile_size=512,
        series={"steps": 24, "min_valid": 3, "on_unreadable": "nodata", "window_size": 64},
        resources={
            "workers": 8,
            "cpus_per_worker": 3.5,
            "gpus_per_worker": 0.5,
            "readers": 4,
            "read_cpus": 1.0,
            "batch_size": 4096,
            "wait_for_resources": True,
        },
    ),  # fmt: skip
    "inline GeoJSON, indices, name and budget": dict(
        region={"type": "Polygon", "coordinates": [[[11.0, 45.0], [11.5, 45.0], [11.5, 45.5], [11.0, 45.0]]]},
        products={"indices": True},
        name="x",
        budget={"max_cost_usd": 10},
    ),
}


@pytest.mark.parametrize("changes", CASES.values(), ids=CASES.keys())
def test_to_args_from_args_round_trip(changes):
    s = spec(**changes)
    assert round_trip(s) == s


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip_through_the_job_parser(path):
    s = RunSpec.load(path)
    assert round_trip(s) == s
    assert RunSpec.from_mapping(yaml.safe_load(s.to_yaml())) == s  # and through YAML


def test_the_job_reads_the_same_run_from_the_command_line():
    """Independent of from_args: the job's own builders read the spec's area and dates from its command line."""
    for region in ("Europe", [11.87, 45.47, 12.045, 45.5]):
        s = spec(region=region, period="2024-winter")
        args = embed_parser().parse_args(s.to_args())
        assert load_aoi(args.aoi).geometry.equals(s.aoi().geometry)
        assert series_spec(args).dates == s.dates() == s.dates(dt.date(1999, 1, 1))
        assert (args.out, args.workers, args.tile_size) == (s.output, s.resources.workers, s.tile_size)


def test_from_a_namespace_and_a_rolling_period():
    s = spec(period="last 6 months")
    today = dt.date(2025, 3, 15)
    back = RunSpec.from_args(embed_parser().parse_args(s.to_args(today=today)))
    assert back.period.start == dt.date(2024, 9, 1) and back.period.end == dt.date(2025, 2, 28)
    assert back.model_copy(update={"period": s.period}) == s


def test_a_forecast_head_goes_through_the_command_line():
    s = spec(products={"embedding": True, "forecast": "s3://b/models/pimc/forecast"})
    args = s.to_args()
    assert args[args.index("--forecast-head") + 1] == "s3://b/models/pimc/forecast"
    assert RunSpec.from_args(args, parser=embed_parser()) == s
    assert "--forecast-head" not in spec().to_args()


def test_every_job_option_is_a_spec_key_with_the_same_default():
    """The job's options map one to one onto the spec, and the spec's defaults are the job's."""
    parser = embed_parser()
    options = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    how_to_run = {"-h", "--dry-run", "--update", "--accept-degraded"}  # how to run, not what
    assert set(options) - set(FLAGS.values()) == how_to_run
    defaults = spec().model_dump()
    for key, flag in FLAGS.items():
        if options[flag].required or key.startswith("products.classes"):
            continue
        value = defaults
        for part in key.split("."):
            value = value[part]
        assert value == options[flag].default, key
    classes = RunSpec.model_fields["products"].annotation.model_fields["classes"].annotation
    labels = [a for a in classes.__args__ if a is not type(None)][0].model_fields["labels_collection"].default
    assert labels == options["--labels-collection"].default


def test_indices_go_to_their_own_job_and_folder():
    s = spec(products={"embedding": False, "indices": True})
    [(job, args)] = s.commands()
    assert job == "jobs/export_indices.py" and args[args.index("--out") + 1] == "s3://b/o/indices"
    with pytest.raises(InvalidConfigError, match="no mapping job"):
        s.to_args()


# --- periods ------------------------------------------------------------------------------------------------

D = dt.date
PERIODS = [
    ("2022", None, D(2022, 1, 1), D(2022, 12, 31)),
    (2024, None, D(2024, 1, 1), D(2024, 12, 31)),
    ("2022-winter", None, D(2021, 12, 1), D(2022, 2, 28)),
    ("2024-winter", None, D(2023, 12, 1), D(2024, 2, 29)),  # a leap year's February
    ({"year": 2022, "season": "spring"}, None, D(2022, 3, 1), D(2022, 5, 31)),
    ({"year": 2022, "season": "summer"}, None, D(2022, 6, 1), D(2022, 8, 31)),
    ("2022-autumn", None, D(2022, 9, 1), D(2022, 11, 30)),
    ({"last_months": 12}, D(2025, 3, 15), D(2024, 3, 1), D(2025, 2, 28)),
    ("last 12 months", D(2025, 3, 1), D(2024, 3, 1), D(2025, 2, 28)),
    ("last 1 month", D(2025, 1, 31), D(2024, 12, 1), D(2024, 12, 31)),
    ({"last_months": 3}, D(2024, 3, 31), D(2023, 12, 1), D(2024, 2, 29)),
    ({"start": "2022-03-05", "end": D(2022, 10, 31)}, None, D(2022, 3, 5), D(2022, 10, 31)),
]


@pytest.mark.parametrize(("period", "today", "start", "end"), PERIODS)
def test_periods_resolve_to_their_dates(period, today, start, end):
    dates = spec(period=period).dates(today)
    assert (dates.start, dates.end) == (start, end)


def test_a_range_that_is_a_year_or_a_season_is_kept_as_one():
    assert spec(period={"start": "2022-06-01", "end": "2022-08-31"}) == spec(period="2022-summer")
    assert spec(period={"start": D(2021, 12, 1), "end": D(2022, 2, 28)}).period.season == "winter"
    assert spec(period={"start": "2022-01-01", "end": "2022-12-31"}).period.label() == "2022"


# --- regions ------------------------------------------------------------------------------------------------


def laea_km2(geometry) -> float:
    """Area in an equal-area projection (EPSG:3035, ETRS89 LAEA Europe): independent of the geodesic sum."""
    to_laea = Transformer.from_crs(4326, 3035, always_xy=True)
    return shapely.transform(geometry, to_laea.transform, interleaved=False).area / 1e6


def test_france_is_metropolitan_france():
    france = region_geometry("France")
    assert area_km2(france) == pytest.approx(5.5e5, rel=0.05)  # 551,695 km² with Corsica; 1:110m drawing
    assert laea_km2(france) == pytest.approx(area_km2(france), rel=0.005)
    assert france.bounds[0] > -6  # French Guiana is a region of its own
    assert region_geometry("GUF").bounds[2] < -51
    assert region_geometry("fra").equals(france) and region_geometry(" FRANCE ").equals(france)


def test_europe_is_clipped_at_the_urals():
    europe = region_geometry("Europe")
    assert area_km2(europe) == pytest.approx(1e7, rel=0.05)
    assert laea_km2(europe) == pytest.approx(area_km2(europe), rel=0.01)
    minx, miny, maxx, maxy = europe.bounds
    assert -25 <= minx and maxx <= 60 and 34 <= miny and maxy <= 82
    assert europe.contains(shapely.Point(37.6, 55.75))  # Moscow
    assert europe.contains(shapely.Point(-21.9, 64.1))  # Reykjavik
    assert not europe.contains(shapely.Point(32.9, 39.9))  # Ankara: Turkey is Asia in Natural Earth
    assert spec(region="Europe").aoi().geometry.equals(europe)


def test_the_regions_ship_with_the_package():
    files = resources.files("pimc_ray.runs")
    assert files.joinpath("naturalearth_lowres.geojson").is_file()
    assert "public domain" in files.joinpath("naturalearth_lowres.LICENSE.txt").read_text()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.geojson" in data["tool"]["setuptools"]["package-data"]["pimc_ray.runs"]
    features = json.loads(files.joinpath("naturalearth_lowres.geojson").read_text())["features"]
    assert {tuple(sorted(f["properties"])) for f in features} == {("continent", "iso_a3", "name")}


# --- one-line errors naming the key -------------------------------------------------------------------------

ERRORS = [
    ({"regoin": "France"}, "spec.regoin: unknown key; did you mean 'region'?"),
    ({"resources": {"worker": 2}}, "spec.resources.worker: unknown key; did you mean 'workers'?"),
    ({"resources": {"workers": "two"}}, "spec.resources.workers: Input should be a valid integer"),
    ({"resources": {"workers": "two"}}, "(got 'two')"),
    ({"tile_size": 1000}, "spec.tile_size: Input should be a multiple of 16"),
    ({"region": "Frnace"}, "spec.region.name: unknown region 'Frnace'; did you mean 'France'?"),
    ({"region": "Russia"}, "spec.region.name: region 'Russia' crosses the antimeridian"),
    (
        {"region": [12.0, 45.0, 12.0, 46.0]},
        "spec.region.bbox: bbox [12.0, 45.0, 12.0, 46.0] is empty or reversed",
    ),
    ({"region": {"bbox": [1, 2, 3]}}, "spec.region.bbox"),
    (
        {"region": {"name": "France", "bbox": [1, 2, 3, 4]}},
        "spec.region: give exactly one of name, bbox or geojson",
    ),
    ({"period": "summer"}, "spec.period: cannot read 'summer' as a period; write a year"),
    ({"period": {"start": "2022-05-01", "end": "2022-04-01"}}, "spec.period: end 2022-04-01 is before start"),
    (
        {"catalog": {"stac_url": "http://x", "convention": "usgs"}},
        "spec.catalog.convention: unknown convention",
    ),
    ({"output": "gs://b/o"}, "spec.output: gs://b/o: gs:// (Google Cloud Storage) is not configured"),
    ({"products": {"classes": {}}}, "spec.products.classes: give either head"),
    ({"budget": {"max_gpu_hours": -1}}, "spec.budget.max_gpu_hours: Input should be greater than 0"),
]


@pytest.mark.parametrize(("changes", "message"), ERRORS)
def test_errors_are_one_line_naming_the_key(changes, message):
    with pytest.raises(InvalidConfigError) as caught:
        spec(**changes)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_a_missing_key_is_named():
    with pytest.raises(InvalidConfigError, match=r"^spec\.output: missing"):
        RunSpec.from_mapping({k: v for k, v in MINIMAL.items() if k != "output"})


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("region: France\nperiod: 2022\nperiod: 2023\n")
    with pytest.raises(
        InvalidConfigError, match=r"bad\.yaml: not a valid YAML file at line 3.*'period' is given twice"
    ):
        RunSpec.load(bad)
    bad.write_text("region: [1, 2\n")
    with pytest.raises(InvalidConfigError, match=r"bad\.yaml: not a valid YAML file at line"):
        RunSpec.load(bad)
    bad.write_text("- France\n")
    with pytest.raises(InvalidConfigError, match="a run spec is a mapping of keys"):
        RunSpec.load(bad)
    bad.write_text(yaml.safe_dump({**MINIMAL, "resources": {"workers": "two"}}))
    with pytest.raises(
        InvalidConfigError, match=r"bad\.yaml: spec\.resources\.workers: Input should be a valid"
    ):
        RunSpec.load(bad)


def test_command_line_errors_name_the_option():
    args = ["--aoi", "11,45,11.1,45.1", "--start", "2022-01-01", "--end", "2022-12-31", "--stac-url", "http://x",
            "--out", "s3://b/o"]  # fmt: skip
    with pytest.raises(
        InvalidConfigError, match=r"^--workers \(spec\.resources\.workers\): .*greater than or equal"
    ):
        RunSpec.from_args([*args, "--workers", "-1"], parser=embed_parser())
    with pytest.raises(InvalidConfigError, match=r"^--aoi \(spec\.region\.bbox\): .* is empty or reversed"):
        RunSpec.from_args([*args, "--aoi", "11,45,11,45.1"], parser=embed_parser())
    with pytest.raises(TypeError, match="parser=embed_parser"):
        RunSpec.from_args(args)


# --- object storage -----------------------------------------------------------------------------------------


def test_a_spec_and_its_region_from_s3(s3, tmp_path):
    prefix = f"s3://pimc-test/specs-{uuid.uuid4().hex[:8]}"
    area = {"type": "Polygon", "coordinates": [[[11.9, 45.48], [11.95, 45.48], [11.95, 45.5], [11.9, 45.48]]]}
    write_bytes(json.dumps(area).encode(), f"{prefix}/area.geojson")
    text = (ROOT / "infra" / "specs" / "sample-mini-continent.yaml").read_text()
    write_bytes(text.encode(), f"{prefix}/mini.yaml")
    s = RunSpec.load(f"{prefix}/mini.yaml")
    assert s == RunSpec.load(ROOT / "infra" / "specs" / "sample-mini-continent.yaml")
    on_s3 = s.model_copy(update={"region": s.region.model_validate(f"{prefix}/area.geojson")})
    assert on_s3.aoi().geometry.equals(shapely.geometry.shape(area))
    assert round_trip(on_s3) == on_s3
    with pytest.raises(InvalidConfigError, match="spec.region: AOI file"):
        spec(region=f"{prefix}/missing.geojson").aoi()


def test_pimc_run_validate_prints_the_spec_or_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    pimc = Path(sys.executable).parent / "pimc"
    ok = subprocess.run([str(pimc), "run", "validate", str(EXAMPLES[-1])], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert f"run spec {EXAMPLES[-1].stem}" in ok.stdout and "python jobs/embed_aoi.py --aoi" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nregion: {name: Frnace}\nperiod: 2022\noutput: out\n")
    refused = subprocess.run([str(pimc), "run", "validate", str(bad)], capture_output=True, text=True)
    assert refused.returncode == EXIT_BAD_INPUT
    assert refused.stderr.strip().count("\n") == 0 and "did you mean 'France'" in refused.stderr
