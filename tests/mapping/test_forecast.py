"""The forecast product: forecast dates, the forecast head, its reader, its job and the forecast COGs of a map."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import shapely.geometry
from rio_cogeo.cogeo import cog_validate

from pimc_ray.data.series import SeriesSpec, read_observations, read_series
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.data.timegrid import TimeGridSpec, future_dates, grid_dates
from pimc_ray.errors import EXIT_BAD_INPUT, CheckpointError
from pimc_ray.local import demo_aoi, demo_train_aoi
from pimc_ray.models.heads import LinearClassifier, LinearForecaster
from tests.mapping.test_map_jobs import check_stac, job_args
from tests.specs import SERIES_RP_ENCODER, TEST_SPEC

#: A calendar window whose 6 following steps the sample archive (2022) observes: 36 steps of 7.6 days.
START, END, STEPS, HORIZON = "2022-01-01", "2022-09-30", 36, 6


def spec(**kw) -> SeriesSpec:
    dates = DateRange(dt.date.fromisoformat(START), dt.date.fromisoformat(END))
    return SeriesSpec(dates=dates, timegrid=TimeGridSpec(steps=STEPS), **kw)


def test_forecast_dates_continue_the_grid_at_its_step():
    # ten one-day bins over 1-10 January: centres at noon; the next two are the 11th and 12th at noon
    start, end = dt.date(2022, 1, 1), dt.date(2022, 1, 10)
    assert str(grid_dates(start, end, 10)[-1]) == "2022-01-10T12:00:00"
    assert [str(d) for d in future_dates(start, end, 10, 2)] == ["2022-01-11T12:00:00", "2022-01-12T12:00:00"]
    # 36 bins over 2022: 10.14 days each; the first date after the year is 5.07 days into 2023
    year = future_dates(dt.date(2022, 1, 1), dt.date(2022, 12, 31), 36, 1)
    assert str(year[0]) == "2023-01-06T01:40:00"


def test_forecaster_learns_the_change_from_the_last_value_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n, dim, horizon = 400, 12, 4
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, [2, 5, 7]] = rng.uniform(-0.5, 0.5, size=(n, 3))  # the last NDVI, EVI, SAVI values
    slope = rng.normal(scale=0.02, size=(dim, 3 * horizon))
    future = x[:, [2, 5, 7], None] + (x @ slope).reshape(n, 3, horizon)  # last value + a linear change
    head = LinearForecaster(dim, horizon, [2, 5, 7], steps=36, step_days=10.1).fit(x, future, l2=1e-8)
    np.testing.assert_allclose(head.predict(x), np.clip(future, -1, 1), atol=1e-4)
    # an all-zero change is persistence
    still = LinearForecaster(dim, horizon, [2, 5, 7], 36, 10.1).fit(x, np.repeat(x[:, [2, 5, 7], None], 4, 2))
    np.testing.assert_allclose(still.predict(x), np.repeat(x[:, [2, 5, 7], None], 4, 2), atol=1e-5)
    head.save(tmp_path / "forecast")
    again = LinearForecaster.load(tmp_path / "forecast")
    assert (again.horizon, again.last, again.steps, again.step_days) == (4, [2, 5, 7], 36, 10.1)
    np.testing.assert_array_equal(again.predict(x), head.predict(x))
    # a classification head is not a forecast head, and a missing file is named
    LinearClassifier(dim, [1, 2]).save(tmp_path / "classes")
    with pytest.raises(CheckpointError, match="not a forecast head"):
        LinearForecaster.load(tmp_path / "classes")
    with pytest.raises(CheckpointError, match="it is a forecast head: pass it to --forecast-head"):
        LinearClassifier.load(tmp_path / "forecast")
    (tmp_path / "forecast" / "head.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no head.safetensors"):
        LinearForecaster.load(tmp_path / "forecast")


def test_reader_keeps_what_follows_the_range_out_of_the_series(sample_archive, series_checkpoint):
    """The series equal those read from the items before the end alone; the targets are the indices on the
    forecast dates, here recomputed by hand for a few pixels with np.interp over their clear observations."""
    from pimc_ray.local.archive import tile_info
    from pimc_ray.mapping.embedder import series_reader
    from pimc_ray.mapping.forecast import ForecastReader, forecast_dates
    from pimc_ray.models import EncoderConfig

    s = spec()
    items = [i for i in sample_archive.read_items("sentinel-2-l2a") if "_32TQS_" in i["id"]]
    info = tile_info(sample_archive.spec, "32TQS")
    grid = OutputGrid(info.epsg, info.bounds, 10.0, shapely.geometry.box(*info.bounds))
    x0, _, _, y1 = info.bounds
    window = Window(0, 0, 32, 32, (x0, y1 - 320, x0 + 320, y1))
    config = EncoderConfig.from_dict(SERIES_RP_ENCODER)
    series, future = ForecastReader(series_reader(s, items, config), HORIZON)(grid, window)

    before = [i for i in items if i["properties"]["datetime"][:10] <= END]
    assert len(before) < len(items)
    expected = read_series(before, s, grid, window)
    np.testing.assert_array_equal(series.values, expected.values)

    obs = read_observations(items, s, grid, window)
    days = obs.times.astype("datetime64[s]").astype(np.int64) / 86400
    dates = forecast_dates(s, HORIZON).astype(np.int64) / 86400
    observed = np.flatnonzero(np.isfinite(future).all(axis=(0, 1)))
    assert len(observed) > 0.5 * window.pixels
    for p in observed[:: len(observed) // 5]:
        clear = np.isfinite(obs.values[:, :, p]).all(axis=1)
        blue, red, nir = (np.interp(dates, days[clear], obs.values[clear, b, p]) for b in range(3))
        ndvi = (nir - red) / (nir + red)
        savi = 1.5 * (nir - red) / (nir + red + 0.5)
        np.testing.assert_allclose(future[0, :, p], ndvi, atol=1e-5)
        np.testing.assert_allclose(future[2, :, p], savi, atol=1e-5)
        assert days[clear][-1] >= np.floor(dates[-1])  # bracketed by a real observation
    # past the archive's last day (2022) no target is observed: all of them are NaN, never held values
    year = SeriesSpec(DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)), TimeGridSpec(steps=STEPS))
    _, beyond = ForecastReader(series_reader(year, items, config), 2)(grid, window)
    assert np.isnan(beyond).all()
    np.testing.assert_array_equal(np.isfinite(future[:, :, observed]), True)


def test_train_forecast_then_map_writes_forecast_cogs_the_head_reproduces(
    stac_api, series_checkpoint, tmp_path, capsys
):
    """jobs/train_forecast.py fits a head on the training area; the mapping job then writes per tile a
    forecast COG (3 x 6 bands, dates in the descriptions), equal to the head applied to the embedding COG read
    back, with its STAC asset; the head beats persistence on its training pixels."""
    from pimc_ray.cli.jobs import embed_main, train_forecast_main
    from pimc_ray.mapping.forecast import forecast_bands

    head_dir = tmp_path / "forecast"
    train = [
        *("--checkpoint", series_checkpoint, "--aoi", demo_train_aoi(TEST_SPEC), "--out", str(head_dir)),
        *("--start", START, "--end", END, "--horizon", str(HORIZON), "--stac-url", stac_api.url),
        *("--window-size", "64", "--per-window", "512"),
    ]
    assert train_forecast_main(train) == 0, capsys.readouterr().err
    fit = json.loads((head_dir / "fit.json").read_text())
    assert fit["pixels"] > 1000 and fit["targets_until"] == "2022-12-16"
    for index in ("NDVI", "EVI", "SAVI"):
        assert fit["train_rmse"][index] < fit["persistence_rmse"][index]
    head = LinearForecaster.load(head_dir)

    out = tmp_path / "map"
    overrides = {"--checkpoint": series_checkpoint, "--forecast-head": str(head_dir), "--workers": "0"}
    args = job_args(stac_api.url, out, **overrides, **{"--start": START, "--end": END})
    assert embed_main(args) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["layout"]["forecast"] is True
    items = check_stac(out)
    assert items
    bands = forecast_bands(spec(), HORIZON)
    assert bands[0] == "NDVI_2022-10-04" and bands[-1] == "SAVI_2022-11-11"
    compared = 0
    for item in items:
        folder = out / "tiles" / item["properties"]["pimc:tile"]
        asset = item["assets"]["forecast"]
        assert [b["description"] for b in asset["eo:bands"]] == list(bands)
        path = folder / asset["href"]
        assert cog_validate(str(path))[0]
        with rasterio.open(path) as src:
            forecast = src.read()
            assert src.descriptions == bands and src.count == 3 * HORIZON
        with rasterio.open(folder / item["assets"]["embedding"]["href"]) as src:
            embedding = src.read()
        flat = embedding.reshape(len(embedding), -1).T
        ok = np.isfinite(flat).all(axis=1)
        expected = head.predict(flat[ok]).reshape(int(ok.sum()), -1).T
        np.testing.assert_allclose(forecast.reshape(3 * HORIZON, -1)[:, ok], expected, atol=1e-6)
        assert np.isnan(forecast.reshape(3 * HORIZON, -1)[:, ~ok]).all()
        compared += int(ok.sum())
    assert compared > 1000


def test_a_forecast_head_of_another_grid_or_encoder_is_refused(stac_api, series_checkpoint, tmp_path, capsys):
    """A head fit on other steps, and an encoder whose embedding holds no series: exit 2, one line, nothing
    written."""
    from pimc_ray.cli import main
    from pimc_ray.mapping.forecast import check_forecaster
    from pimc_ray.models import EncoderConfig, save_checkpoint

    head = LinearForecaster(36 * 3 + 4, HORIZON, [35, 71, 107], STEPS, 7.6)
    check_forecaster(
        head, EncoderConfig.from_dict(SERIES_RP_ENCODER), spec(), "here"
    )  # fits the window it was fit on
    head.save(tmp_path / "head")
    out = tmp_path / "map"
    overrides = {
        "--checkpoint": series_checkpoint,
        "--forecast-head": str(tmp_path / "head"),
        "--workers": "0",
    }
    args = job_args(stac_api.url, out, **overrides, **{"--start": START, "--end": "2022-12-31"})
    assert main(["embed", *args]) == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "was fit on 36 steps of 7.6 days" in err[0], err
    assert main(["embed", *args, "--dry-run"]) == EXIT_BAD_INPUT  # the plan refuses it too
    assert "was fit on 36 steps of 7.6 days" in capsys.readouterr().err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]

    rp_only = EncoderConfig(seed=1)
    ckpt = save_checkpoint(tmp_path / "rp", rp_only.build(), rp_only)
    train = ["train-forecast", "--checkpoint", ckpt, "--aoi", demo_aoi(TEST_SPEC), "--stac-url", stac_api.url]
    assert main([*train, "--start", START, "--end", END, "--out", str(tmp_path / "f")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "needs the index series in the embedding" in err
    assert not (tmp_path / "f").exists()
