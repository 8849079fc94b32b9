"""Index forecasts from embeddings: fitting a forecast head on what followed a run's dates, and forecasting maps.

A :class:`~pimc_ray.models.heads.LinearForecaster` predicts NDVI, EVI and SAVI on the ``horizon`` grid steps that
follow a run's date range (:func:`~pimc_ray.data.timegrid.future_dates`) from the run's embedding. It needs the
index series in the embedding (the default export, ``pimc-concat(index-series, ...)``): each forecast is the
index's last grid value plus a predicted change.

:func:`fit_forecaster` is what ``jobs/train_forecast.py`` runs, self-supervised (the future is the target, no
labels):

1. every window of the training area is read once over the run's dates *and* the horizon after them
   (:class:`ForecastReader`): the series on the run's grid are regularised from the observations before the
   range's end only, so nothing of the future leaks into the embedding, and the targets are the indices on the
   forecast dates, interpolated from every observation;
2. the window is embedded as the mapping job embeds it, and up to ``per_window`` random pixels whose targets are
   bracketed by real observations (a valid observation on or after the last forecast date) are kept;
3. the forecaster is fit on them in closed form (ridge on the change from the last value).

A head fit on one calendar window (say January to December 2021, forecasting the first steps of 2022) forecasts
from runs on the same window of another year or area: ``jobs/embed_aoi.py --forecast-head`` refuses one fit on
another step length, another number of steps or another embedding layout.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimc_ray.data.series import (
    INDEX_BANDS,
    Observations,
    SeriesReader,
    SeriesSpec,
    WindowSeries,
    crop_halo,
    iso_dates,
    read_observations,
)
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.data.timegrid import future_dates, step_days
from pimc_ray.errors import InvalidConfigError, NoItemsFoundError
from pimc_ray.kernels.indices import INDEX_NAMES, vegetation_indices
from pimc_ray.mapping.embedder import EmbedderFactory, embedding_bands
from pimc_ray.mapping.heads import gather_samples
from pimc_ray.mapping.runner import Parallelism
from pimc_ray.models.heads import LinearForecaster
from pimc_ray.progress import Progress

logger = logging.getLogger(__name__)

__all__ = [
    "ForecastReader",
    "check_forecaster",
    "fit_forecaster",
    "forecast",
    "forecast_bands",
    "forecast_dates",
    "last_positions",
    "targets_end",
]

Samples = tuple[np.ndarray, np.ndarray]


def forecast_dates(spec: SeriesSpec, horizon: int) -> np.ndarray:
    """``(horizon,)`` datetime64: the dates a forecast from ``spec``'s grid is for."""
    return future_dates(spec.dates.start, spec.dates.end, spec.timegrid.steps, horizon)


#: Days of observations read after the last forecast step, so that its date is bracketed by a real observation
#: wherever the sky allows (a target after a pixel's last observation would be that observation held).
TARGET_MARGIN_DAYS = 31


def targets_end(spec: SeriesSpec, horizon: int) -> dt.date:
    """The last day whose observations a forecast head's targets are read from: the end of the last forecast
    step's bin, plus :data:`TARGET_MARGIN_DAYS`."""
    days = step_days(spec.dates.start, spec.dates.end, spec.timegrid.steps)
    return spec.dates.end + dt.timedelta(days=int(np.ceil(horizon * days)) + TARGET_MARGIN_DAYS)


def forecast_bands(spec: SeriesSpec, horizon: int) -> tuple[str, ...]:
    """The forecast product's band descriptions: ``NDVI_2023-01-06`` ... (every date of NDVI, then EVI, then
    SAVI), as the embedding names its series bands."""
    dates = iso_dates(forecast_dates(spec, horizon))
    return tuple(f"{index}_{date}" for index in INDEX_NAMES for date in dates)


def last_positions(encoder: Any, spec: SeriesSpec) -> list[int]:
    """The positions of NDVI, EVI and SAVI at the grid's last step in ``encoder``'s embedding.

    Raises:
        InvalidConfigError: the embedding does not hold the index series.
    """
    bands = embedding_bands(encoder, spec)
    last = iso_dates(spec.grid_dates()[-1:])[0]
    wanted = [f"{index}_{last}" for index in INDEX_NAMES]
    missing = [w for w in wanted if w not in bands]
    if missing:
        raise InvalidConfigError(
            "a forecast needs the index series in the embedding, and this encoder's has none "
            f"({len(bands)} bands, no {missing[0]}): use a pretraining export's default encoder "
            "(pimc-concat with index-series), not its rp/ or rsi/ part"
        )
    return [bands.index(w) for w in wanted]


def check_forecaster(head: LinearForecaster, encoder: Any, spec: SeriesSpec, where: str) -> None:
    """Refuse a forecast head that does not fit a run's embedding and grid (``where``: the head's location).

    Raises:
        InvalidConfigError: another embedding size or layout, another number of steps or another step length.
    """
    days = step_days(spec.dates.start, spec.dates.end, spec.timegrid.steps)
    last = last_positions(encoder, spec)
    dim = len(embedding_bands(encoder, spec))
    fit = f"fit a head on this encoder and grid (jobs/train_forecast.py), or map with those of {where}"
    if head.dim != dim or head.last != last:
        raise InvalidConfigError(
            f"the forecast head {where} forecasts from {head.dim}-d embeddings with the series at {head.last}, "
            f"and this run's encoder gives {dim}-d ones with them at {last}: {fit}"
        )
    if head.steps != spec.timegrid.steps or abs(head.step_days - days) > 0.5:
        raise InvalidConfigError(
            f"the forecast head {where} was fit on {head.steps} steps of {head.step_days:.1f} days, and this run's "
            f"grid has {spec.timegrid.steps} steps of {days:.1f} days ({spec.dates.start} to {spec.dates.end}): "
            f"{fit}"
        )


def forecast(embedding: np.ndarray, head: LinearForecaster) -> np.ndarray:
    """``(3 horizon, h, w)`` float32 forecast (NDVI's steps, then EVI's, then SAVI's; NaN nodata) of an
    embedding block ``(D, h, w)``."""
    d, height, width = embedding.shape
    flat = embedding.reshape(d, -1).T
    ok = np.isfinite(flat).all(axis=1)
    out = np.full((height * width, 3 * head.horizon), np.nan, dtype=np.float32)
    if ok.any():
        out[ok] = head.predict(flat[ok]).reshape(int(ok.sum()), -1)
    return out.T.reshape(3 * head.horizon, height, width)


@dataclass(frozen=True)
class ForecastReader:
    """Read stage of forecast-head fitting: one read of a window over the run's dates and the horizon after them.

    Returns ``(series, future)``: the window's series on the run's grid, as the mapping job reads them for the
    encoder (``context``: its bands and halo) but from the observations before the range's end only, and
    ``future`` ``(3, horizon, P)`` NDVI, EVI and SAVI on the forecast dates at the window's own pixels, NaN where
    no valid observation falls on or after the last forecast date (a target would be held, not observed).
    """

    context: SeriesReader
    """The mapping job's read stage (:func:`~pimc_ray.mapping.embedder.series_reader`), over items searched up
    to :func:`targets_end`."""
    horizon: int

    def __call__(self, grid: OutputGrid, window: Window) -> tuple[WindowSeries, np.ndarray]:
        spec, halo = self.context.spec, self.context.halo
        grown = window.grown(halo, grid.resolution)
        items = self.context.index.over(grid.epsg, grown.bounds, grid.resolution)
        future = np.full((3, self.horizon, window.pixels), np.nan, dtype=np.float32)
        if not items:
            return WindowSeries.nodata(spec.timegrid.steps, len(spec.bands), grown.pixels), future
        observations = read_observations(items, spec, grid, grown)
        end = np.datetime64(spec.dates.end + dt.timedelta(days=1), "s")
        min_valid = spec.timegrid.min_valid
        series = observations.until(end).regular(spec.grid_dates(), min_valid=min_valid)
        dates = forecast_dates(spec, self.horizon)
        blue_red_nir = [spec.bands.index(b) for b in INDEX_BANDS]  # the targets need no other band
        ahead = Observations(observations.values[:, blue_red_nir], observations.times).regular(
            dates, min_valid=1
        )
        shape = (window.height, window.width, halo)
        bands = crop_halo(ahead.values, *shape)
        observed = crop_halo(ahead.last_valid[None], *shape)[0] >= dates[-1].astype("datetime64[D]")
        indices = vegetation_indices(bands[:, 0], bands[:, 1], bands[:, 2], axis=0)  # (3, horizon, P)
        future[:, :, observed] = indices[:, :, observed]
        return series, future


@dataclass(frozen=True)
class _SamplerFactory:
    """Picklable compute stage of forecast fitting: embed a window, keep up to ``per_window`` random pixels with
    a valid embedding and observed targets."""

    embedder: EmbedderFactory
    per_window: int
    seed: int

    def __call__(self) -> Callable[[OutputGrid, Window, tuple[WindowSeries, np.ndarray]], Samples]:
        embed = self.embedder()

        def sample(grid: OutputGrid, window: Window, read: tuple[WindowSeries, np.ndarray]) -> Samples:
            series, future = read
            embedding = embed(grid, window, series).embedding
            x = embedding.reshape(embedding.shape[0], -1).T  # (P, D)
            y = future.transpose(2, 0, 1)  # (P, 3, horizon)
            ok = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=(1, 2)))
            rng = np.random.default_rng([self.seed, window.row, window.col])
            pick = np.sort(rng.choice(ok, size=min(self.per_window, len(ok)), replace=False))
            return x[pick], y[pick]

        return sample


def fit_forecaster(
    grids: Sequence[OutputGrid],
    *,
    reader: ForecastReader,
    embedder: EmbedderFactory,
    encoder: Any,
    parallel: Parallelism,
    window_size: int = 128,
    per_window: int = 256,
    seed: int = 0,
    progress: Progress = logger.info,
) -> tuple[LinearForecaster, dict[str, Any]]:
    """Fit a forecast head on every window of ``grids``; see the module docstring.

    Args:
        grids: the training area's grids (:func:`~pimc_ray.data.tiles.aoi_grids`).
        reader: the read stage (its context's items must reach :func:`targets_end`).
        embedder: the compute stage's encoder recipe.
        encoder: the encoder module or config (to find the series in its embedding).
        parallel: the workers (``workers=0``: this process).
        window_size: window edge in pixels.
        per_window: pixels kept per window.
        seed: seed of the pixel draws.
        progress: receives progress lines.

    Returns:
        ``(head, stats)``: the head, and its pixels with the training RMSE per index of it and of persistence.

    Raises:
        InvalidConfigError: the embedding holds no index series.
        NoItemsFoundError: no pixel has a valid embedding and observed targets.
        PimcError: a window could not be read or embedded.
    """
    spec, horizon = reader.context.spec, reader.horizon
    last = last_positions(encoder, spec)
    tasks = [(g, w) for g in grids for w in g.windows(window_size)]
    progress(f"[forecast] {len(tasks)} windows; horizon {horizon} steps after {spec.dates.end}")
    factory = _SamplerFactory(embedder, per_window, seed)
    x, y = gather_samples(tasks, reader, factory, parallel=parallel, progress=progress, label="forecast")
    if len(x) < 2:
        last_date = iso_dates(forecast_dates(spec, horizon))[-1]
        raise NoItemsFoundError(
            f"{len(x)} pixels have a valid embedding and an observation on or after {last_date} (the last forecast "
            f"date): a forecast head needs the archive to reach {targets_end(spec, horizon)}; move --end earlier or "
            "shorten --horizon"
        )
    days = step_days(spec.dates.start, spec.dates.end, spec.timegrid.steps)
    progress(f"[forecast] fitting on {len(x)} pixels")
    head = LinearForecaster(x.shape[1], horizon, last, spec.timegrid.steps, days).fit(x, y)
    rmse = np.sqrt(np.mean((head.predict(x) - y) ** 2, axis=(0, 2)))
    persistence = np.sqrt(np.mean((x[:, last, None] - y) ** 2, axis=(0, 2)))
    stats = {
        "pixels": int(len(x)),
        "dates": iso_dates(forecast_dates(spec, horizon)),
        "train_rmse": {n: round(float(v), 4) for n, v in zip(INDEX_NAMES, rmse, strict=True)},
        "persistence_rmse": {n: round(float(v), 4) for n, v in zip(INDEX_NAMES, persistence, strict=True)},
    }
    return head, stats
