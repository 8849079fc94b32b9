"""PASTIS read from its own layout: the values, band order, dates and folds written by the fixture, the regular grid,
and a learnable signal that a linear probe finds while shuffled labels do not."""

from __future__ import annotations

import numpy as np
import pytest

from pimc_ray.evaluation import pastis as ps
from pimc_ray.evaluation.probes import TrainOptions
from pimc_ray.evaluation.tasks import score_forecast
from pimc_ray.models.heads import LinearClassifier
from tests.evaluation.fixtures import write_pastis

B2, B4, B8 = 0, 2, 6  # positions in PASTIS's band order B2 B3 B4 B5 B6 B7 B8 B8A B11 B12


def indices_by_hand(cube: np.ndarray, rows: np.ndarray, cols: np.ndarray, steps: slice) -> np.ndarray:
    """``(n, 3, t)`` NDVI, EVI, SAVI of pixels from a written cube, with the formulas written out (float64)."""
    blue, red, nir = (cube[steps, b][:, rows, cols].T / 10_000.0 for b in (B2, B4, B8))
    ndvi = (nir - red) / (nir + red)
    evi = 2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)
    savi = 1.5 * (nir - red) / (nir + red + 0.5)
    return np.stack([ndvi, evi, savi], axis=1)


def test_metadata_gives_each_patch_its_fold_and_dates(pastis):
    root, written = pastis
    dataset = ps.open_pastis(root)
    assert [p.patch_id for p in dataset.patches] == sorted(written)
    for patch in dataset.patches:
        assert patch.fold == written[patch.patch_id].fold
        assert patch.dates.astype(object).tolist() == written[patch.patch_id].dates
    assert [p.patch_id for p in dataset.select([2, 4])] == [10001, 10003]


def test_forecast_pixels_are_the_written_values_in_band_order(pastis):
    root, written = pastis
    got = ps.forecast_set(ps.open_pastis(root), [1, 3], max_pixels=300, seed=1)
    assert got.history.shape == (300, 3, 32) and got.future.shape == (300, 3, 10)
    assert set(np.unique(got.places.patch_id)) == {10000, 10002} and got.short_patches == 0
    for patch_id in (10000, 10002):
        mine = got.places.patch_id == patch_id
        rows, cols = got.places.row[mine], got.places.col[mine]
        expected = indices_by_hand(written[patch_id].cube, rows, cols, slice(0, 42))
        assert np.allclose(got.history[mine], expected[:, :, :32], atol=1e-5)
        assert np.allclose(got.future[mine], expected[:, :, 32:], atol=1e-5)
    again = ps.forecast_set(ps.open_pastis(root), [1, 3], max_pixels=300, seed=1)
    assert np.array_equal(again.history, got.history)  # seeded


def test_persistence_rmse_is_the_numpy_one_on_the_same_pixels(pastis):
    root, written = pastis
    dataset = ps.open_pastis(root)
    train = ps.forecast_set(dataset, [1, 2, 3], max_pixels=600)
    test = ps.forecast_set(dataset, [5], max_pixels=400)
    rows = score_forecast(train, test, [], options=TrainOptions(epochs=0))
    assert [r.variant for r in rows] == ["persistence", "raw series, linear"]
    truth = indices_by_hand(written[10004].cube, test.places.row, test.places.col, slice(0, 42))
    error = truth[:, :, 32:] - truth[:, :, 31:32]  # the last observation, held for 10 steps
    expected = np.sqrt((error**2).mean(axis=(0, 2)))
    assert [rows[0].scores[k] for k in ("NDVI", "EVI", "SAVI")] == pytest.approx(expected.tolist(), rel=1e-5)
    # seasonal curves are learnable: the linear head on the raw history beats persistence on every index
    assert all(rows[1].scores[k] < rows[0].scores[k] for k in ("NDVI", "EVI", "SAVI"))


def test_patches_with_too_few_observations_are_left_out_of_forecasting(tmp_path):
    written = write_pastis(tmp_path, patches=((1, 1, 44), (2, 1, 38)), size=32)
    got = ps.forecast_set(ps.open_pastis(tmp_path), [1], max_pixels=100)
    assert (got.patches, got.short_patches) == (1, 1)
    assert set(got.places.patch_id.tolist()) == {1} and len(written) == 2


def test_classification_series_are_the_observations_interpolated_onto_one_grid(pastis):
    root, written = pastis
    dataset = ps.open_pastis(root)
    got = ps.classify_set(dataset, [2], max_pixels=50)
    assert got.series.shape == (50, 3, 36) and len(got.grid) == 36
    start, end = dataset.date_range()
    assert got.grid[0] > np.datetime64(start) and got.grid[-1] < np.datetime64(end) + np.timedelta64(1, "D")
    patch = written[10001]
    obs = np.array(patch.dates, dtype="datetime64[D]").astype("datetime64[s]").astype(np.int64) / 86400
    at = got.grid.astype("datetime64[s]").astype(np.int64) / 86400
    for i in range(0, 50, 7):
        r, c = got.places.row[i], got.places.col[i]
        blue, red, nir = (np.interp(at, obs, patch.cube[:, b, r, c] / 10_000.0) for b in (B2, B4, B8))
        ndvi = (nir - red) / (nir + red)
        assert np.allclose(got.series[i, 0], ndvi, atol=1e-5)
        assert got.labels[i] == patch.semantic[r, c]
    assert ps.VOID_CLASS not in got.labels


def test_a_linear_probe_finds_the_seasonal_signal_and_not_shuffled_labels(pastis):
    root, _ = pastis
    dataset = ps.open_pastis(root)
    train = ps.classify_set(dataset, [1, 2, 3], max_pixels=1500)
    test = ps.classify_set(dataset, [5], max_pixels=600)
    classes = sorted(np.unique(train.labels).tolist())
    assert classes == [0, 1, 2, 3, 4, 5]  # six classes, about equally many pixels: chance is about 1/6

    def accuracy(labels: np.ndarray) -> float:
        head = LinearClassifier(108, classes).fit(train.series.reshape(len(train), -1), labels)
        return float((head.predict(test.series.reshape(len(test), -1))[0] == test.labels).mean())

    assert accuracy(train.labels) > 0.9
    shuffled = np.random.default_rng(0).permutation(train.labels)
    assert accuracy(shuffled) < 0.35
