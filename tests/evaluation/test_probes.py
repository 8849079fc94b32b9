"""Probes and fine-tuning against independent computations: ridge by NumPy, batch-norm statistics of the inputs,
a fine-tuned model that starts as its probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pimc_ray.evaluation.probes import (
    LinearRegressor,
    TrainOptions,
    TunedHead,
    calibrate_batch_norm,
    fine_tune,
    predict,
)
from pimc_ray.evaluation.towers import ImageInputs, PatchGridEncoder, encoder_variants
from pimc_ray.models.heads import LinearClassifier


def test_the_regression_probe_is_ridge_on_standardised_features():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [0.1, 2.0, 5.0], size=(200, 3))
    y = x @ rng.normal(size=(3, 2)) + rng.normal(0, 0.1, size=(200, 2))
    head = LinearRegressor(3, 2).fit(x, y, l2=0.05)
    z = (x - x.mean(0)) / x.std(0, ddof=1)  # torch's std is the sample one
    weight = np.linalg.solve(z.T @ z / 200 + 0.05 * np.eye(3), z.T @ (y - y.mean(0)) / 200)
    expected = z @ weight + y.mean(0)
    with torch.no_grad():
        got = head(torch.as_tensor(x, dtype=torch.float32)).numpy()
    assert np.allclose(got, expected, atol=1e-4)


def test_a_tuned_head_starts_as_its_probe():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(120, 5)) * [1e-4, 1, 10, 0.5, 3]).astype(np.float32)
    y = rng.integers(0, 3, size=120)
    probe = LinearClassifier(5, [0, 1, 2]).fit(x, y)
    with torch.no_grad():
        assert torch.allclose(
            TunedHead(probe).eval()(torch.from_numpy(x)), probe(torch.from_numpy(x)), atol=1e-4
        )


def test_random_init_batch_norm_statistics_come_from_the_samples():
    images = np.random.default_rng(2).integers(100, 3000, size=(48, 10, 18, 18)).astype(np.uint16)
    (variant,) = encoder_variants(None, "patches", seed=0)
    options = TrainOptions(batch_size=16)  # three equal batches: their average is the mean over every image
    encoder = PatchGridEncoder(variant.encoder)
    calibrated = calibrate_batch_norm(encoder, ImageInputs(images, "cpu"), 48, options)
    band_mean = (images / 10_000.0).mean(
        axis=(0, 2, 3)
    )  # the input batch norm sees all of every 18 x 18 image
    assert np.allclose(calibrated.encoder.norm.running_mean.numpy(), band_mean, rtol=1e-4)
    assert torch.equal(variant.encoder.norm.running_mean, torch.zeros(10))  # the variant itself is untouched
    assert calibrated.encoder.norm.momentum == variant.encoder.norm.momentum


def test_fine_tuning_without_a_step_size_keeps_the_probes_predictions():
    rng = np.random.default_rng(3)
    images = rng.integers(100, 3000, size=(30, 10, 9, 9)).astype(np.uint16)
    labels = np.arange(30) % 3
    (variant,) = encoder_variants(None, "patches", seed=0)
    options = TrainOptions(epochs=1, batch_size=8, lr=1e-12)
    inputs = ImageInputs(images, "cpu")
    encoder = calibrate_batch_norm(PatchGridEncoder(variant.encoder), inputs, 30, options)
    features = predict(encoder, inputs, 30, options)
    probe = LinearClassifier(features.shape[1], [0, 1, 2]).fit(features, labels)
    model = fine_tune(encoder, probe, inputs, torch.as_tensor(labels), torch.nn.functional.cross_entropy,
                      options=options, name="test")  # fmt: skip
    with torch.no_grad():
        expected = probe(torch.from_numpy(features)).numpy()
    assert predict(model, inputs, 30, options) == pytest.approx(expected, abs=1e-3)
