"""Recurrence plots against pyts (the PIMC authors' implementation) as the oracle, and the batch builders.

pyts is imported once per session (``import pyts.image`` costs ~20-30 s: numba compiles at import) and only
here; tests that need it skip where it is missing (the GPU image). CuPy cases compare with the NumPy path,
which the pyts cases pin.
"""

from __future__ import annotations

import numpy as np
import pytest

from pimc_ray.kernels.indices import vegetation_indices
from pimc_ray.kernels.recurrence import (
    embedded_length,
    recurrence_plot,
    resample_series,
    rp_batch,
    rp_from_reflectance,
)
from pimc_ray.kernels.xp import to_numpy


@pytest.fixture(scope="session")
def pyts_rp():
    """``pyts.image.RecurrencePlot``, imported once per session."""
    return pytest.importorskip("pyts.image").RecurrencePlot


def _series(n, t, *, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, t)).astype(dtype)


# --- bit-for-bit agreement with pyts ---------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 2, 5, 32, 61])
def test_distances_equal_pyts_bit_for_bit(pyts_rp, t):
    x = _series(40, t, seed=t)
    got = recurrence_plot(x)
    assert got.shape == (40, t, t) and got.dtype == np.float64
    np.testing.assert_array_equal(got, pyts_rp().transform(x))


def test_constant_series_give_zero_plots(pyts_rp):
    x = np.full((3, 61), 0.37)
    got = recurrence_plot(x)
    assert not got.any()
    np.testing.assert_array_equal(got, pyts_rp().transform(x))


@pytest.mark.parametrize(("dimension", "time_delay"), [(2, 1), (3, 2), (4, 5), (7, 10)])
def test_embedded_trajectories_equal_pyts_bit_for_bit(pyts_rp, dimension, time_delay):
    x = _series(30, 61, seed=dimension)
    got = recurrence_plot(x, dimension=dimension, time_delay=time_delay)
    assert got.shape[-1] == embedded_length(61, dimension, time_delay) == 61 - (dimension - 1) * time_delay
    np.testing.assert_array_equal(got, pyts_rp(dimension=dimension, time_delay=time_delay).transform(x))


@pytest.mark.parametrize(
    ("threshold", "percentage"),
    [
        (0.3, None),
        (1.0, None),
        ("point", None),
        ("point", 0),
        ("point", 37.5),
        ("point", 100),
        ("distance", None),
        ("distance", 50),
        ("distance", 100),
    ],
)
@pytest.mark.parametrize("dimension", [1, 3])
def test_thresholds_equal_pyts(pyts_rp, threshold, percentage, dimension):
    x = _series(25, 32, seed=3)
    kwargs = {} if percentage is None else {"percentage": percentage}
    got = recurrence_plot(x, threshold=threshold, dimension=dimension, time_delay=2, **kwargs)
    expected = pyts_rp(threshold=threshold, dimension=dimension, time_delay=2, **kwargs).transform(x)
    assert set(np.unique(got)) <= {0.0, 1.0}
    np.testing.assert_array_equal(got, expected)


def test_float32_within_1e6_of_pyts(pyts_rp):
    x = _series(50, 61, dtype=np.float32)
    got = recurrence_plot(x)
    assert got.dtype == np.float32
    expected = pyts_rp().transform(x)  # pyts computes in float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    got = recurrence_plot(x, dimension=3, time_delay=2)
    expected = pyts_rp(dimension=3, time_delay=2).transform(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_leading_dimensions_and_integers_like_pyts(pyts_rp):
    x = _series(12, 20).reshape(2, 2, 3, 20)  # (tile, pixel, index, time)
    got = recurrence_plot(x)
    assert got.shape == (2, 2, 3, 20, 20)
    np.testing.assert_array_equal(got.reshape(12, 20, 20), pyts_rp().transform(x.reshape(12, 20)))
    ints = np.random.default_rng(0).integers(-500, 500, (4, 9)).astype(np.int16)
    got = recurrence_plot(ints)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, pyts_rp().transform(ints))


# --- NaN, buffers, validation (the same rules on every backend) -------------------------------------------


def test_nan_fills_its_rows_and_columns_only(xp):
    x = _series(2, 8)
    x[0, 3] = np.nan
    got = to_numpy(recurrence_plot(xp.asarray(x)))
    nan = np.isnan(got[0])
    assert nan[3].all() and nan[:, 3].all() and nan.sum() == 15
    clean = np.delete(np.delete(got[0], 3, 0), 3, 1)
    expected = recurrence_plot(np.delete(x[0], 3))
    np.testing.assert_array_equal(clean, expected)
    assert not np.isnan(got[1]).any()
    # dimension 2, delay 1: trajectories 2 and 3 contain step 3
    got = to_numpy(recurrence_plot(xp.asarray(x), dimension=2))
    assert np.isnan(got[0, [2, 3]]).all() and np.isnan(got[0, :, [2, 3]]).all()
    assert np.isnan(got[0]).sum() == 2 * 7 * 2 - 4


def test_nan_with_thresholds(xp):
    x = _series(3, 10)
    x[1, 4] = np.nan
    fixed = to_numpy(recurrence_plot(xp.asarray(x), threshold=0.5))
    assert np.isnan(fixed[1, 4]).all() and np.isnan(fixed[1]).sum() == 19
    assert set(np.unique(fixed[1][~np.isnan(fixed[1])])) <= {0.0, 1.0}
    for rule in ("point", "distance"):
        got = to_numpy(recurrence_plot(xp.asarray(x), threshold=rule, percentage=30))
        assert np.isnan(got[1]).all()  # percentile of a plot with nodata is undefined
        np.testing.assert_array_equal(got[[0, 2]], recurrence_plot(x[[0, 2]], threshold=rule, percentage=30))


def test_out_buffer_is_filled_in_place(xp):
    x = xp.asarray(_series(6, 5, dtype=np.float32))
    out = xp.full((6, 5, 5), np.nan, dtype=np.float32)  # BLAS must not read the garbage in `out`
    got = recurrence_plot(x, out=out)
    assert got is out
    np.testing.assert_array_equal(to_numpy(out), recurrence_plot(to_numpy(x)))
    out = xp.empty((6, 3, 3), dtype=np.float64)
    assert recurrence_plot(xp.asarray(_series(6, 5)), dimension=2, time_delay=2, out=out) is out


def test_bad_out_buffers_are_refused(xp):
    x = xp.asarray(_series(6, 5, dtype=np.float32))
    for bad in (
        xp.empty((6, 5, 4), np.float32),  # shape
        xp.empty((6, 5, 5), np.float64),  # dtype
        xp.empty((6, 5, 10), np.float32)[:, :, ::2],  # layout
    ):
        with pytest.raises(ValueError, match="out must be"):
            recurrence_plot(x, out=bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dimension": 0}, ValueError, "dimension"),
        ({"dimension": 2.5}, ValueError, "dimension"),
        ({"time_delay": 0}, ValueError, "time_delay"),
        ({"dimension": 4, "time_delay": 3}, ValueError, "no trajectory"),
        ({"threshold": -0.1}, ValueError, "> 0"),
        ({"threshold": "median"}, ValueError, "threshold"),
        ({"threshold": [0.1]}, TypeError, "threshold"),
        ({"threshold": "point", "percentage": 150}, ValueError, "percentage"),
        ({"percentage": 20}, ValueError, "only applies"),
    ],
)
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        recurrence_plot(_series(2, 7), **kwargs)
    with pytest.raises(ValueError, match="time step"):
        recurrence_plot(np.zeros((3, 0)))


def test_backends_agree(xp):
    x = _series(20, 33, seed=5)
    x[3, 7] = np.nan
    for kwargs in (
        {},
        {"dimension": 3, "time_delay": 4},
        {"threshold": 0.4},
        {"threshold": "point"},
        {"threshold": "distance", "percentage": 25},
    ):
        for dtype in (np.float32, np.float64):
            got = to_numpy(recurrence_plot(xp.asarray(x.astype(dtype)), **kwargs))
            assert got.dtype == dtype
            expected = recurrence_plot(x.astype(dtype), **kwargs)
            if kwargs.get("threshold") == "point":
                # cupy.percentile may round the interpolated threshold 1 ulp away from NumPy's: a distance
                # within an ulp of it may flip. Everything else must agree exactly.
                assert np.mean((got == expected) | (np.isnan(got) & np.isnan(expected))) > 0.999
            else:
                np.testing.assert_array_equal(got, expected)


# --- resampling and the batch builders ------------------------------------------------------------------


def test_resample_series_matches_np_interp(xp):
    x = _series(4, 61)
    got = to_numpy(resample_series(xp.asarray(x), 32))
    pos = np.linspace(0, 60, 32)
    expected = np.stack([np.interp(pos, np.arange(61), row) for row in x])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.array_equal(got[:, [0, -1]], x[:, [0, -1]])  # ends kept exactly
    up = to_numpy(resample_series(xp.asarray(x), 121))  # doubling: every other output step is an input step
    np.testing.assert_array_equal(up[:, ::2], x)
    assert resample_series(xp.asarray(x), 61).shape == (4, 61)
    assert to_numpy(resample_series(xp.asarray(x[:, :1]), 5)).tolist() == np.repeat(x[:, :1], 5, 1).tolist()


def test_resampling_keeps_nan_local(xp):
    x = np.arange(11.0)[None].repeat(2, 0)
    x[0, 5] = np.nan
    got = to_numpy(resample_series(xp.asarray(x), 21))  # steps 0, 0.5, 1, ...: step 5 feeds outputs 9, 10, 11
    assert np.flatnonzero(np.isnan(got[0])).tolist() == [9, 10, 11]
    np.testing.assert_array_equal(got[1], np.arange(21) / 2)


def test_rp_batch_defaults_equal_recurrence_plot(xp):
    series = _series(8 * 3, 36, dtype=np.float32).reshape(8, 3, 36)
    got = rp_batch(xp.asarray(series))
    assert got.shape == (8, 3, 36, 36) and got.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(got), recurrence_plot(series))


def test_rp_batch_size_is_the_plot_of_the_resampled_series(xp):
    series = _series(5 * 3, 61, dtype=np.float32).reshape(5, 3, 61)
    got = to_numpy(rp_batch(xp.asarray(series), size=32))
    assert got.shape == (5, 3, 32, 32)
    expected = recurrence_plot(resample_series(series, 32))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (np.diagonal(got, axis1=-2, axis2=-1) == 0).all()
    np.testing.assert_array_equal(got, np.swapaxes(got, -1, -2))


def test_rp_batch_max_normalisation(xp):
    series = _series(6 * 3, 20, dtype=np.float32).reshape(6, 3, 20)
    series[0, 1] = 0.25  # constant channel: stays all zero
    series[2, 0, 5] = np.nan  # nodata: ignored by the scaling, NaN row/col in the plot
    got = to_numpy(rp_batch(xp.asarray(series), normalize="max"))
    peak = np.nanmax(got, axis=(-2, -1))
    assert peak[0, 1] == 0.0
    np.testing.assert_allclose(np.delete(peak.ravel(), 1), 1.0, rtol=0, atol=2e-7)
    raw = recurrence_plot(series)
    scale = np.nanmax(raw, axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(got, raw / np.where(scale > 0, scale, 1), rtol=0, atol=1e-6)
    assert np.isnan(got[2, 0, 5]).all() and np.isnan(got[2, 0]).sum() == 39


def test_rp_batch_reuses_out_and_validates(xp):
    series = xp.asarray(_series(4 * 3, 10, dtype=np.float32).reshape(4, 3, 10))
    out = xp.full((4, 3, 16, 16), np.nan, dtype=np.float32)
    assert rp_batch(series, size=16, normalize="max", out=out) is out
    assert not np.isnan(to_numpy(out)).any()
    with pytest.raises(ValueError, match="pixel, index, time"):
        rp_batch(series[0])
    with pytest.raises(ValueError, match="normalize"):
        rp_batch(series, normalize="minmax")
    with pytest.raises(ValueError, match="size"):
        rp_batch(series, size=0)
    with pytest.raises(ValueError, match="out must be"):
        rp_batch(series, out=xp.empty((4, 3, 16, 16), np.float32))


def _reflectance(n, t, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    blue = rng.uniform(0.0, 0.2, (n, t))
    red = rng.uniform(0.0, 0.3, (n, t))
    nir = rng.uniform(0.0, 0.6, (n, t))
    blue[0, 2] = np.nan  # nodata: EVI only
    blue[1, 4], nir[1, 4], red[1, 4] = 0.2, 0.5, 0.0  # EVI denominator 0 -> NaN
    blue[2, 1], nir[2, 1], red[2, 1] = 0.19, 0.5, 0.0  # EVI 16.7 -> clipped to 1
    return [a.astype(dtype) for a in (blue, red, nir)]


@pytest.mark.parametrize(
    "options", [{}, {"size": 32}, {"size": 16, "normalize": "max"}, {"normalize": "max"}]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rp_from_reflectance_composes_indices_and_plots(xp, options, dtype):
    bands = _reflectance(9, 23, dtype=dtype)
    got = rp_from_reflectance(*(xp.asarray(b) for b in bands), **options)
    s = options.get("size", 23)
    assert got.shape == (9, 3, s, s) and got.dtype == dtype
    expected = rp_batch(vegetation_indices(*bands, axis=1), **options)
    np.testing.assert_allclose(to_numpy(got), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(to_numpy(got)), np.isnan(expected))
    if not options:
        nan = np.isnan(expected)
        assert nan[0, 1, 2].all() and not nan[0, [0, 2]].any()  # blue missing: EVI row/col only
        assert nan[1, 1, 4].all()


def test_rp_from_reflectance_refuses_mismatched_bands():
    with pytest.raises(ValueError, match="pixel, time"):
        rp_from_reflectance(np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="pixel, time"):
        rp_from_reflectance(np.zeros(5), np.zeros(5), np.zeros(5))


@pytest.mark.gpu
def test_fused_kernel_covers_more_pixels_than_threads():
    """More pixels than the grid has warps: every pixel goes through the kernel's grid-stride loop."""
    from pimc_ray.kernels.xp import import_cupy

    cp = import_cupy()
    bands = _reflectance(40_000, 6, seed=7)
    got = rp_from_reflectance(*(cp.asarray(b) for b in bands), size=9, normalize="max")
    expected = rp_from_reflectance(*bands, size=9, normalize="max")
    np.testing.assert_allclose(to_numpy(got), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(to_numpy(got)), np.isnan(expected))
