"""NDVI, EVI and SAVI against values computed by hand, plus the NaN, epsilon and clipping policy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pimc_ray.kernels.indices import INDEX_NAMES, evi, ndvi, savi, vegetation_indices
from pimc_ray.kernels.xp import to_numpy

# Three pixels: (blue, red, nir) surface reflectance.
#   crop  B 0.05, R 0.08, N 0.40
#   soil  B 0.10, R 0.15, N 0.20
#   water B 0.08, R 0.05, N 0.02
BLUE = [0.05, 0.10, 0.08]
RED = [0.08, 0.15, 0.05]
NIR = [0.40, 0.20, 0.02]
# NDVI = (N - R) / (N + R): crop 0.32 / 0.48 = 2/3; soil 0.05 / 0.35 = 1/7; water -0.03 / 0.07 = -3/7
NDVI = [0.32 / 0.48, 0.05 / 0.35, -0.03 / 0.07]
# EVI = 2.5 (N - R) / (N + 6R - 7.5B + 1):
#   crop  2.5 * 0.32 / (0.40 + 0.48 - 0.375 + 1) = 0.8 / 1.505
#   soil  2.5 * 0.05 / (0.20 + 0.90 - 0.750 + 1) = 0.125 / 1.35
#   water 2.5 * -0.03 / (0.02 + 0.30 - 0.600 + 1) = -0.075 / 0.72
EVI = [0.8 / 1.505, 0.125 / 1.35, -0.075 / 0.72]
# SAVI = 1.5 (N - R) / (N + R + 0.5): crop 0.48 / 0.98; soil 0.075 / 0.85; water -0.045 / 0.57
SAVI = [0.48 / 0.98, 0.075 / 0.85, -0.045 / 0.57]


def _arr(xp, values, dtype=np.float64):
    return xp.asarray(np.asarray(values, dtype=dtype))


def test_hand_computed_values(xp):
    b, r, n = (_arr(xp, v) for v in (BLUE, RED, NIR))
    np.testing.assert_allclose(to_numpy(ndvi(n, r)), NDVI, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(evi(n, r, b)), EVI, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(savi(n, r)), SAVI, rtol=1e-12)
    # SAVI with L = 0 is NDVI; with L = 1: crop 2 * 0.32 / 1.48
    np.testing.assert_allclose(to_numpy(savi(n, r, 0.0)), NDVI, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(savi(n, r, 1.0))[0], 0.64 / 1.48, rtol=1e-12)


def test_stack_order_and_axis(xp):
    rng = np.random.default_rng(0)
    b, r, n = (xp.asarray(rng.uniform(0.0, 0.5, (4, 7)).astype(np.float32)) for _ in range(3))
    stacked = vegetation_indices(b, r, n, axis=1)  # (pixel, index, time)
    assert stacked.shape == (4, 3, 7) and stacked.dtype == np.float32
    assert stacked.flags.c_contiguous
    assert INDEX_NAMES == ("NDVI", "EVI", "SAVI")
    for k, expected in enumerate((ndvi(n, r), evi(n, r, b), savi(n, r))):
        np.testing.assert_array_equal(to_numpy(stacked[:, k]), to_numpy(expected))
    assert vegetation_indices(b, r, n).shape == (3, 4, 7)
    np.testing.assert_array_equal(
        to_numpy(vegetation_indices(b, r, n, axis=-1)), to_numpy(xp.moveaxis(stacked, 1, 2))
    )


def test_dtypes(xp):
    for dtype, expected in ((np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float32)):
        b, r, n = (_arr(xp, v, dtype) for v in (BLUE, RED, NIR))
        assert ndvi(n, r).dtype == expected
        assert evi(n, r, b).dtype == expected
        assert savi(n, r).dtype == expected
        assert vegetation_indices(b, r, n).dtype == expected
    # float32 results are the float32 computation, not a rounded float64 one, but agree closely
    b, r, n = (_arr(xp, v, np.float32) for v in (BLUE, RED, NIR))
    np.testing.assert_allclose(to_numpy(evi(n, r, b)), EVI, rtol=1e-6)
    ints = _arr(xp, [4000, 1500], np.int16), _arr(xp, [1000, 1500], np.int16)
    assert ndvi(*ints).dtype == np.float64
    np.testing.assert_allclose(to_numpy(ndvi(*ints)), [0.6, 0.0])


def test_zero_and_tiny_denominators_are_nan_without_warnings(xp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # NDVI: N + R = 0 exactly, and 5e-7 < 1e-6; 2e-6 is kept (and equals 1).
        got = to_numpy(ndvi(_arr(xp, [0.0, 5e-7, 2e-6]), _arr(xp, [0.0, 0.0, 0.0])))
        assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == 1.0
        # EVI: N + 6R - 7.5B + 1 = 0.5 + 0 - 1.5 + 1 = 0 for B = 0.2
        got = to_numpy(evi(_arr(xp, [0.5]), _arr(xp, [0.0]), _arr(xp, [0.2])))
        assert np.isnan(got[0])
        # SAVI: N + R + L = 0 needs negative reflectance: 0.1 + (-0.6) + 0.5
        got = to_numpy(savi(_arr(xp, [0.1]), _arr(xp, [-0.6])))
        assert np.isnan(got[0])
        assert not np.isinf(got).any()


def test_nan_inputs_give_nan(xp):
    nan = float("nan")
    b, r, n = _arr(xp, [nan, 0.05]), _arr(xp, [0.08, nan]), _arr(xp, [0.4, 0.4])
    stacked = to_numpy(vegetation_indices(b, r, n))  # (index, pixel)
    assert np.isnan(stacked[:, 1]).all()  # red missing: every index is NaN
    assert not np.isnan(stacked[[0, 2], 0]).any()  # blue missing: only EVI needs it
    assert np.isnan(stacked[1, 0])


def test_evi_blows_up_near_a_zero_denominator_and_is_clipped(xp):
    # B = 0.19: denominator 0.5 + 0 - 1.425 + 1 = 0.075, so EVI = 1.25 / 0.075 = 16.67
    n, r, b = _arr(xp, [0.5, 0.5]), _arr(xp, [0.0, 0.0]), _arr(xp, [0.19, 0.23])
    raw = to_numpy(evi(n, r, b, clip=False))
    np.testing.assert_allclose(raw[0], 1.25 / 0.075, rtol=1e-9)
    # B = 0.23: denominator -0.225 (sign flips): EVI = -5.56
    np.testing.assert_allclose(raw[1], 1.25 / -0.225, rtol=1e-9)
    np.testing.assert_array_equal(to_numpy(evi(n, r, b)), [1.0, -1.0])


def test_negative_reflectance_pushes_ndvi_out_of_range_and_is_clipped(xp):
    n, r = _arr(xp, [0.01]), _arr(xp, [-0.009])
    np.testing.assert_allclose(to_numpy(ndvi(n, r, clip=False)), [0.019 / 0.001], rtol=1e-9)
    assert to_numpy(ndvi(n, r))[0] == 1.0


def test_indices_stay_in_range_for_valid_reflectance(xp):
    rng = np.random.default_rng(1)
    b, r, n = (xp.asarray(rng.uniform(0.0, 1.0, 10_000)) for _ in range(3))
    for values in (ndvi(n, r, clip=False), savi(n, r, clip=False)):
        v = to_numpy(values)
        assert np.nanmin(v) >= -1.0 and np.nanmax(v) <= 1.0
    v = to_numpy(vegetation_indices(b, r, n))
    assert np.nanmin(v) >= -1.0 and np.nanmax(v) <= 1.0


def test_mismatched_band_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        vegetation_indices(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="axis"):
        vegetation_indices(np.zeros(3), np.zeros(3), np.zeros(3), axis=2)
