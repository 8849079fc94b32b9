"""Regular time grids, checked against hand-computed interpolation."""

import datetime as dt

import numpy as np
import pytest

from pimc_ray.data.timegrid import grid_dates, regularize


def days(*ds):
    return np.array([np.datetime64(f"2022-01-{d:02d}") for d in ds])


def test_grid_dates_are_bin_centres():
    g = grid_dates(dt.date(2022, 1, 1), dt.date(2022, 1, 10), 5)  # 10 days, 5 bins of 2 days
    assert list(g.astype("datetime64[h]").astype(str)) == [
        "2022-01-02T00",
        "2022-01-04T00",
        "2022-01-06T00",
        "2022-01-08T00",
        "2022-01-10T00",
    ]


def test_linear_interpolation_across_gaps_by_hand():
    # one pixel, one channel; observations on Jan 1, 3, 5, 9 with Jan 3 cloudy (NaN)
    values = np.array([1.0, np.nan, 5.0, 9.0], np.float32).reshape(4, 1, 1)
    grid = days(2, 4, 7, 9)
    out = regularize(values, days(1, 3, 5, 9), grid, min_valid=1)
    # Jan 2: between Jan 1 (1.0) and Jan 5 (5.0) -> 1 + 4 * 1/4 = 2; Jan 4 -> 4; Jan 7: 5 + 4 * 2/4 = 7; Jan 9 -> 9
    np.testing.assert_allclose(out.values[:, 0, 0], [2.0, 4.0, 7.0, 9.0])
    assert out.valid_count[0] == 3
    assert (out.first_valid[0], out.last_valid[0]) == (0, 3)


def test_ends_hold_the_nearest_value_and_few_valid_is_nodata():
    v = np.full((5, 2, 3), np.nan, np.float32)
    v[1:4, :, 0] = [[1, 10], [2, 20], [3, 30]]  # pixel 0: valid on obs 1..3
    v[2, :, 1] = [7, 70]  # pixel 1: one valid observation
    v[2, 0, 2] = 5  # pixel 2: one channel only -> invalid observation
    out = regularize(v, days(1, 2, 3, 4, 5), days(1, 3, 5), min_valid=2)
    np.testing.assert_allclose(out.values[:, :, 0], [[1, 10], [2, 20], [3, 30]])
    assert np.isnan(out.values[:, :, 1]).all()  # 1 valid < min_valid 2
    assert np.isnan(out.values[:, :, 2]).all()
    assert list(out.valid_count) == [3, 1, 0]
    assert list(out.first_valid) == [1, 2, -1]


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_interp_per_pixel(seed):
    rng = np.random.default_rng(seed)
    n_obs, n_pix = 30, 200
    times = np.sort(rng.choice(np.arange(365), n_obs, replace=False)).astype(
        "timedelta64[D]"
    ) + np.datetime64("2022-01-01")
    values = rng.random((n_obs, 2, n_pix)).astype(np.float32)
    values.transpose(0, 2, 1)[rng.random((n_obs, n_pix)) < 0.4] = np.nan
    grid = grid_dates(dt.date(2022, 1, 1), dt.date(2022, 12, 31), 36)
    out = regularize(values, times, grid, min_valid=4)
    t = times.astype("datetime64[s]").astype(np.int64) / 86400
    g = grid.astype("datetime64[s]").astype(np.int64) / 86400
    for p in range(n_pix):
        ok = np.isfinite(values[:, 0, p])
        for c in range(2):
            expected = np.interp(g, t[ok], values[ok, c, p]) if ok.sum() >= 4 else np.full(len(g), np.nan)
            np.testing.assert_allclose(out.values[:, c, p], expected, rtol=1e-5, atol=1e-6)


def test_no_observations_at_all_is_nodata():
    out = regularize(np.empty((0, 3, 4), np.float32), np.array([], "datetime64[s]"), days(1, 2), min_valid=1)
    assert out.values.shape == (2, 3, 4) and np.isnan(out.values).all()
    assert list(out.valid_count) == [0] * 4 and list(out.first_valid) == [-1] * 4
