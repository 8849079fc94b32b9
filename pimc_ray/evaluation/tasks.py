"""The paper's downstream tasks, scored: PASTIS pixel forecasting and classification, EuroSAT classification.

Every task scores the same variants on the same samples:

* baselines without an encoder: persistence (forecast only) and a linear head on the raw input (the index series,
  or EuroSAT's band statistics);
* each encoder of :func:`~pimc_ray.evaluation.towers.encoder_variants` (randomly initialised, and pretrained when a
  checkpoint is given) as a **linear probe** (a linear head on its frozen embeddings) and, with ``epochs > 0``,
  **fine-tuned** (encoder and head trained together, starting from the probe's head).

:func:`evaluate_pastis` and :func:`evaluate_eurosat` read a dataset folder and return a
:class:`~pimc_ray.evaluation.report.Report`; :func:`score_forecast` and :func:`score_classification` score
arrays already read. docs/paper-choices.md ("Downstream evaluation") explains each choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pimc_ray.data.timegrid import MAX_STEPS
from pimc_ray.errors import DatasetError, InvalidConfigError
from pimc_ray.evaluation import eurosat as es
from pimc_ray.evaluation import pastis as ps
from pimc_ray.evaluation.metrics import (
    class_accuracy,
    class_iou,
    confusion_matrix,
    mean_iou,
    overall_accuracy,
    rmse_per_channel,
)
from pimc_ray.evaluation.probes import (
    Inputs,
    LinearRegressor,
    TrainOptions,
    calibrate_batch_norm,
    embed,
    fine_tune,
    predict,
)
from pimc_ray.evaluation.report import Report, Row
from pimc_ray.evaluation.towers import EncoderVariant, ImageInputs, PatchGridEncoder, PlotInputs
from pimc_ray.kernels.indices import INDEX_NAMES
from pimc_ray.models.heads import LinearClassifier
from pimc_ray.progress import Progress

logger = logging.getLogger(__name__)

__all__ = [
    "CONTEXT",
    "HORIZON",
    "Labelled",
    "evaluate_eurosat",
    "evaluate_pastis",
    "score_classification",
    "score_forecast",
]

#: Observations a forecast starts from, and values it predicts (the paper's protocol).
CONTEXT = 32
HORIZON = 10


def _say(progress: Progress | None, line: str) -> None:
    """A progress line to ``progress``, or to the log without one."""
    if progress is not None:
        progress(line)
    else:
        logger.info(line.strip())


def _ready(
    variant: EncoderVariant, encoder: nn.Module, inputs: Inputs, n: int, options: TrainOptions
) -> nn.Module:
    """The encoder to score: a random-init one with batch-norm statistics of the training samples
    (:func:`~pimc_ray.evaluation.probes.calibrate_batch_norm`), a pretrained one as it is."""
    if variant.name != "random-init":
        return encoder
    return calibrate_batch_norm(encoder, inputs, n, options)


# --- forecasting ---------------------------------------------------------------------------------------------


def _index_rmse(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return dict(zip(INDEX_NAMES, rmse_per_channel(prediction, target).tolist(), strict=True))


def score_forecast(
    train: ps.ForecastSet,
    test: ps.ForecastSet,
    variants: Sequence[EncoderVariant],
    *,
    options: TrainOptions,
    progress: Progress | None = None,
) -> list[Row]:
    """RMSE per index of every forecasting variant on ``test``, heads fit on ``train``.

    Every learnt forecast predicts the change from the last observation of the history (``future - last``),
    with a linear head on its features: the raw history (3 x context values) or an encoder's embedding of the
    history's recurrence plots (3 x context x context). Persistence repeats the last observation.
    """
    horizon = test.future.shape[-1]
    last_train, last_test = train.history[:, :, -1:], test.history[:, :, -1:]
    delta = (train.future - last_train).reshape(len(train), -1)  # (N, 3 * horizon)

    def forecast(change: np.ndarray) -> np.ndarray:  # (N, 3 * horizon) -> (N, 3, horizon)
        return last_test + change.reshape(len(test), 3, horizon)

    rows = [Row("persistence", "-", _index_rmse(np.repeat(last_test, horizon, axis=2), test.future))]
    raw = LinearRegressor(train.history[0].size, delta.shape[1]).fit(
        train.history.reshape(len(train), -1), delta, l2=options.l2
    )
    with torch.no_grad():
        change = raw(torch.from_numpy(test.history.reshape(len(test), -1))).numpy()
    rows.append(Row("raw series, linear", "-", _index_rmse(forecast(change), test.future)))
    _say(progress, f"  persistence and raw series scored on {len(test)} test pixels")

    train_in, test_in = PlotInputs(train.history, options.device), PlotInputs(test.history, options.device)
    for variant in variants:
        encoder = _ready(variant, variant.encoder, train_in, len(train), options)
        features_train = embed(encoder, train_in, len(train), options)
        features_test = embed(encoder, test_in, len(test), options)
        head = LinearRegressor(features_train.shape[1], delta.shape[1]).fit(
            features_train, delta, l2=options.l2
        )
        change = head(torch.from_numpy(features_test)).detach().numpy()
        scores = _index_rmse(forecast(change), test.future)
        rows.append(Row(f"{variant.label}, linear probe", variant.weights, scores))
        _say(progress, f"  {rows[-1].variant} scored")
        if options.epochs:
            model = fine_tune(
                encoder, head, train_in, torch.from_numpy(delta), nn.functional.mse_loss,
                options=options, name=variant.label, progress=progress,
            )  # fmt: skip
            scores = _index_rmse(forecast(predict(model, test_in, len(test), options)), test.future)
            rows.append(Row(f"{variant.label}, fine-tuned", variant.weights, scores))
    return rows


# --- classification ------------------------------------------------------------------------------------------

Scores = Callable[[np.ndarray], tuple[dict[str, float], dict[str, float]]]
"""A confusion matrix -> (the report's scores, the score per class name)."""


@dataclass(frozen=True)
class Labelled:
    """The samples of one split of a classification task."""

    raw: np.ndarray
    """``(N, F)`` raw features: the raw baseline's input."""
    inputs: Inputs
    """Sample indices -> the encoder's input batch."""
    labels: np.ndarray
    """``(N,)`` class ids."""

    def __len__(self) -> int:
        return len(self.labels)


def score_classification(
    train: Labelled,
    test: Labelled,
    variants: Sequence[EncoderVariant],
    *,
    n_classes: int,
    scores: Scores,
    raw_name: str,
    wrap: Callable[[nn.Module], nn.Module] = lambda encoder: encoder,
    options: TrainOptions,
    progress: Progress | None = None,
) -> list[Row]:
    """Scores of every classification variant on the ``test`` samples, heads fit on the ``train`` samples.

    Args:
        train: the training samples.
        test: the test samples.
        variants: the encoders.
        n_classes: number of class ids 0..n_classes-1 (the confusion matrix's size).
        scores: a confusion matrix -> (scores, per-class scores).
        raw_name: the raw baseline's row name.
        wrap: turns a variant's encoder into the module that embeds a sample (e.g. :class:`PatchGridEncoder`).
        options: probe, fine-tuning and device options.
        progress: receives progress lines.
    """
    y_train, y_test = train.labels, test.labels
    class_ids = sorted(np.unique(y_train).tolist())
    if len(class_ids) < 2:
        raise DatasetError(
            f"the training samples hold a single class ({class_ids}); use more folds or images"
        )

    def row(variant: str, weights: str, predicted: np.ndarray) -> Row:
        score, per_class = scores(confusion_matrix(y_test, predicted, n_classes))
        return Row(variant, weights, score, per_class)

    raw = LinearClassifier(train.raw.shape[1], class_ids).fit(train.raw, y_train, l2=options.l2)
    rows = [row(raw_name, "-", raw.predict(test.raw)[0])]
    _say(progress, f"  {raw_name} scored on {len(y_test)} test samples")

    ids = torch.as_tensor(class_ids)
    target = torch.as_tensor(np.searchsorted(class_ids, y_train), dtype=torch.long)  # class id -> head output
    for variant in variants:
        encoder = _ready(variant, wrap(variant.encoder), train.inputs, len(train), options)
        features_train = embed(encoder, train.inputs, len(train), options)
        features_test = embed(encoder, test.inputs, len(test), options)
        head = LinearClassifier(features_train.shape[1], class_ids).fit(
            features_train, y_train, l2=options.l2
        )
        rows.append(row(f"{variant.label}, linear probe", variant.weights, head.predict(features_test)[0]))
        _say(progress, f"  {rows[-1].variant} scored")
        if options.epochs:
            model = fine_tune(
                encoder, head, train.inputs, target, nn.functional.cross_entropy,
                options=options, name=variant.label, progress=progress,
            )  # fmt: skip
            logits = predict(model, test.inputs, len(test), options)
            predicted = ids[torch.from_numpy(logits).argmax(dim=1)].numpy()
            rows.append(row(f"{variant.label}, fine-tuned", variant.weights, predicted))
    return rows


def _pixels(pixels: ps.ClassifySet, device: str) -> Labelled:
    """PASTIS pixels: the regular-grid series as raw features, their plots for the encoder."""
    return Labelled(pixels.series.reshape(len(pixels), -1), PlotInputs(pixels.series, device), pixels.labels)


def _images(images: es.EuroSATImages, device: str) -> Labelled:
    """EuroSAT images: the band statistics as raw features, the encoder's bands as reflectance."""
    inputs = ImageInputs(images.bands, device, scale=es.REFLECTANCE_SCALE)
    return Labelled(images.band_stats, inputs, images.labels)


def _pastis_scores(cm: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Overall accuracy and mean IoU over the non-void classes present in truth or predictions."""
    iou = class_iou(cm)
    per_class = {ps.CLASS_NAMES[c]: float(v) for c, v in enumerate(iou) if np.isfinite(v)}
    return {"OA": overall_accuracy(cm), "mIoU": mean_iou(cm)}, per_class


def _eurosat_scores(cm: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Overall accuracy, and accuracy per class."""
    per_class = dict(zip(es.EUROSAT_CLASSES, class_accuracy(cm).tolist(), strict=True))
    return {"accuracy": overall_accuracy(cm)}, per_class


# --- whole evaluations ---------------------------------------------------------------------------------------


def _folds(folds: Sequence[int]) -> str:
    return ",".join(map(str, folds))


def evaluate_pastis(
    root: str | Path,
    task: Literal["forecast", "classify"],
    variants: Sequence[EncoderVariant],
    *,
    train_folds: Sequence[int] = (1, 2, 3),
    test_folds: Sequence[int] = (5,),
    max_pixels: int = 50_000,
    max_patches: int | None = None,
    steps: int = 36,
    options: TrainOptions,
    progress: Progress | None = None,
) -> Report:
    """Score ``variants`` on PASTIS: ``forecast`` (next 10 index values from the first 32 observations) or
    ``classify`` (the pixel's class from its regular-grid series), heads fit on ``train_folds``, scored on
    ``test_folds``; at most ``max_pixels`` pixels of each split (of ``max_patches`` patches each, if given).

    Raises:
        DatasetError: the folder does not have the PASTIS layout (the message names it).
        InvalidConfigError: overlapping folds, or ``steps`` outside 2..128.
    """
    if not 2 <= steps <= MAX_STEPS:
        raise InvalidConfigError(
            f"--steps {steps} must lie in 2..{MAX_STEPS} (a plot is 3 x steps x steps per pixel)"
        )
    if set(train_folds) & set(test_folds):
        raise InvalidConfigError(
            f"--train-folds {_folds(train_folds)} and --test-folds {_folds(test_folds)} overlap; pick disjoint folds"
        )
    dataset = ps.open_pastis(root)
    sampling: dict[str, Any] = {"max_pixels": max_pixels, "max_patches": max_patches, "seed": options.seed}
    settings: dict[str, Any] = {**options.to_dict(), "max_pixels": max_pixels, "max_patches": max_patches}
    _say(progress, f"PASTIS {task}: train folds {_folds(train_folds)}, test folds {_folds(test_folds)}")
    if task == "forecast":
        f_train = ps.forecast_set(
            dataset, train_folds, context=CONTEXT, horizon=HORIZON, **sampling, progress=progress
        )
        f_test = ps.forecast_set(
            dataset, test_folds, context=CONTEXT, horizon=HORIZON, **sampling, progress=progress
        )
        rows = score_forecast(f_train, f_test, variants, options=options, progress=progress)
        return Report(
            task="pastis-forecast",
            title=f"PASTIS pixel forecast: the next {HORIZON} NDVI, EVI and SAVI values from the first {CONTEXT} "
            "observations, RMSE (lower is better)",
            columns=INDEX_NAMES,
            unit="rmse",
            rows=tuple(rows),
            data={
                "train": _split_info(train_folds, len(f_train), f_train.patches, f_train.short_patches),
                "test": _split_info(test_folds, len(f_test), f_test.patches, f_test.short_patches),
            },
            settings={**settings, "context": CONTEXT, "horizon": HORIZON},
        )
    c_train = ps.classify_set(dataset, train_folds, steps=steps, **sampling, progress=progress)
    c_test = ps.classify_set(dataset, test_folds, steps=steps, **sampling, progress=progress)
    rows = score_classification(
        _pixels(c_train, options.device),
        _pixels(c_test, options.device),
        variants,
        n_classes=ps.VOID_CLASS,  # classes 0..18; void pixels are never drawn
        scores=_pastis_scores,
        raw_name="raw series, linear",
        options=options,
        progress=progress,
    )
    grid = c_train.grid.astype("datetime64[D]")
    return Report(
        task="pastis-classify",
        title="PASTIS pixel classification (classes 0..18, void left out): overall accuracy and mean IoU",
        columns=("OA", "mIoU"),
        unit="percent",
        rows=tuple(rows),
        data={
            "train": _split_info(train_folds, len(c_train), c_train.patches),
            "test": _split_info(test_folds, len(c_test), c_test.patches),
            "grid": {"steps": steps, "first": str(grid[0]), "last": str(grid[-1])},
        },
        settings={**settings, "steps": steps},
        per_class_name="IoU",
    )


def _split_info(folds: Sequence[int], pixels: int, patches: int, short: int | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"folds": _folds(folds), "pixels": pixels, "patches": patches}
    if short:
        info["patches with too few observations (left out)"] = short
    return info


def evaluate_eurosat(
    root: str | Path,
    variants: Sequence[EncoderVariant],
    *,
    split_files: Sequence[str | Path] | None = None,
    test_fraction: float = 0.2,
    max_per_class: int | None = None,
    options: TrainOptions,
    progress: Progress | None = None,
) -> Report:
    """Score image-patch ``variants`` on EuroSAT: accuracy overall and per class, heads fit on the training
    images; the split is ``split_files`` (train, test) or a stratified split with ``test_fraction`` of each class
    drawn with ``options.seed``; ``max_per_class`` caps the images of each class (of each split file).

    Raises:
        DatasetError: the folder does not have the EuroSAT layout, or a split file names unknown images.
    """
    catalog = es.list_eurosat(root)
    if split_files is not None:
        train_idx, test_idx = es.split_from_files(catalog, split_files)
        if max_per_class is not None:
            train_idx = es.cap_per_class(catalog.labels, train_idx, max_per_class, options.seed)
            test_idx = es.cap_per_class(catalog.labels, test_idx, max_per_class, options.seed)
        split: Mapping[str, Any] = {"split": "files " + ", ".join(map(str, split_files))}
    else:
        every = np.arange(len(catalog))
        if max_per_class is not None:
            every = es.cap_per_class(catalog.labels, every, max_per_class, options.seed)
        local_train, local_test = es.stratified_split(
            catalog.labels[every], test_fraction=test_fraction, seed=options.seed
        )
        train_idx, test_idx = every[local_train], every[local_test]
        split = {"split": f"stratified, {test_fraction:.0%} of each class for test, seed {options.seed}"}
    _say(progress, f"EuroSAT: reading {len(train_idx)} training and {len(test_idx)} test images")
    train = es.read_images(catalog, train_idx, progress=progress)
    test = es.read_images(catalog, test_idx, progress=progress)
    rows = score_classification(
        _images(train, options.device),
        _images(test, options.device),
        variants,
        n_classes=len(es.EUROSAT_CLASSES),
        scores=_eurosat_scores,
        raw_name="raw band statistics, linear",
        wrap=PatchGridEncoder,
        options=options,
        progress=progress,
    )
    return Report(
        task="eurosat",
        title="EuroSAT land-cover classification (10 classes; the image-patch encoder averaged over an image's "
        "tiles): accuracy",
        columns=("accuracy",),
        unit="percent",
        rows=tuple(rows),
        data={**split, "train": {"images": len(train)}, "test": {"images": len(test)}},
        settings={**options.to_dict(), "test_fraction": test_fraction, "max_per_class": max_per_class},
        per_class_name="accuracy",
    )
