"""Per-window inference: series -> plots -> encoder, on NumPy and (when lent a GPU) CuPy + CUDA."""

import datetime as dt

import numpy as np
import pytest
import torch

from pimc_ray.infer import WindowEmbedder, classify
from pimc_ray.models import EncoderConfig
from pimc_ray.recurrence import rp_from_reflectance
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import DateRange

SPEC = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
SMALL = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 12}, seed=2)


def random_series(n_pix=150, steps=36, seed=0):
    rng = np.random.default_rng(seed)
    series = rng.uniform(0.01, 0.5, (steps, 3, n_pix)).astype(np.float32)  # (T, blue/red/nir, P)
    series[:, :, 5] = np.nan  # a nodata pixel
    series[:, :, 7] = 0.0  # a black pixel: finite reflectance, NaN indices (0/0)
    return series


def test_embed_series_is_encoder_of_plots_with_nodata_kept():
    series = random_series()
    model = SMALL.build().eval()
    out = WindowEmbedder(SPEC, [], model, batch_size=64).embed_series(series)
    assert out.shape == (150, 12) and out.dtype == np.float32
    by_pixel = series.transpose(2, 1, 0)  # (P, 3, T)
    plots = rp_from_reflectance(by_pixel[:, 0], by_pixel[:, 1], by_pixel[:, 2])
    with torch.no_grad():
        expected = model(torch.from_numpy(plots)).numpy()
    good = np.setdiff1d(np.arange(150), [5, 7])
    np.testing.assert_allclose(out[good], expected[good], rtol=1e-5, atol=1e-6)
    assert np.isnan(out[[5, 7]]).all()


def test_classify_keeps_nodata():
    class Head:
        def predict(self, x):
            return np.where(x[:, 0] > 0, 3, 4), np.full(len(x), 0.9, np.float32)

    emb = np.stack([np.array([[1.0, -1.0], [np.nan, 2.0]]), np.zeros((2, 2))])  # (D=2, 2, 2)
    classes, conf = classify(emb.astype(np.float32), Head())
    np.testing.assert_array_equal(classes, [[3, 4], [0, 3]])
    assert np.isnan(conf[1, 0]) and conf[0, 0] == pytest.approx(0.9)


@pytest.mark.gpu
def test_cuda_path_matches_cpu():
    series = random_series(n_pix=3000, seed=1)
    cpu = WindowEmbedder(SPEC, [], SMALL.build(), batch_size=64).embed_series(series)
    gpu = WindowEmbedder(SPEC, [], SMALL.build(), batch_size=64, device="cuda").embed_series(series)
    np.testing.assert_array_equal(np.isnan(cpu), np.isnan(gpu))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)  # cuDNN convolutions (TF32 off by default)
