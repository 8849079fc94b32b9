"""Learning check across scenario families: does the default embedding beat its own input, the index series?

One sample archive cannot be the judge: it was shaped while the model was designed. So the check runs over
**scenario families** of the generator (``docs/sample-archive.md``), several seeds each. Every run builds two
128-pixel tiles in neighbouring UTM zones (32TQS and 33TTL), pretrains with the code of ``jobs/pretrain.py`` on
both tiles' unlabelled pixels, embeds every labelled pixel through the mapping job's own code
(:class:`pimc_ray.mapping.embedder.WindowEmbedder` on windows read as the mapping job reads them), and fits a
linear probe (standardised features, multinomial logistic regression, C = 1) on one tile, scored on every
labelled pixel of the other, both directions; with all labels and with 1, 5 and 20 labelled pixels per class
(``--draws`` class-balanced draws each).

Feature sets (rows):

* ``default embedding``: what pretraining exports as its default (``<export>``): the index series beside the
  pretrained RP encoder and the pretrained image-patch (RSI) encoder of the same run on the pixel's 9 x 9 median
  patch (``pimc-concat(index-series, rp-resnet, rsi-cnn)``), read as the mapping job reads it;
* ``series + RP``: the default without its patch part (``pimc-concat(index-series, rp-resnet)``);
* ``RP encoder (paper)``: the pretrained RP encoder alone (``<export>/rp``), PIMC's embedding;
* ``default, random encoders``: the default's architecture randomly initialised (the control);
* ``raw index series``: NDVI, EVI and SAVI on the regular grid (3 T values), what the indices job writes;
* ``NDVI series``: NDVI alone (T values).

Per family, regime and feature set it reports the mean over seeds and both directions, and the worst of them.
Families marked held out were declared with the check before any run of it and are only reported.

Forecast part (``--forecast-only``; it reuses the exports and never pretrains): on a context grid of the export's
T steps from the archive's first day, short enough that ``HORIZON`` (10) more steps of the same length end at least
15 days before its last day, both tiles are read as the forecast head's fitting reads them
(:class:`pimc_ray.mapping.forecast.ForecastReader`), and NDVI, EVI and SAVI on the next 10 steps are forecast on
one tile from heads fit on the other, both directions: RMSE per index of the library's
:class:`~pimc_ray.models.heads.LinearForecaster` on the default embedding and on the raw index series, of
persistence (the last context value) and of climatology (the training tile's mean at each forecast step).

    python benchmarks/learning_check.py --out out/learning-check                       # every family, 2 seeds
    python benchmarks/learning_check.py --families base,level --seeds 1 --steps 300    # a quick look
    python benchmarks/learning_check.py --forecast-only --out out/learning-check       # forecast RMSE

Needs scikit-learn (the probe; a dev dependency). Pretraining runs on a local Ray (2 workers x 0.5 CPU + one
pair reader) against a local STAC API over each family's archive; the job's command line is kept in the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.data.series import INDEX_BANDS, SeriesSpec, crop_halo, read_series  # noqa: E402
from pimc_ray.data.stac import DateRange  # noqa: E402
from pimc_ray.data.tiles import OutputGrid  # noqa: E402
from pimc_ray.data.timegrid import TimeGridSpec  # noqa: E402
from pimc_ray.kernels.indices import INDEX_NAMES, vegetation_indices  # noqa: E402

SHOTS = (1, 5, 20)
REGIMES = ("all", *(f"{k}-shot" for k in SHOTS))
TILES = ("32TQS", "33TTL")
DEFAULT, NO_PATCH, RP_ONLY, RANDOM, RAW, NDVI = (
    "default embedding",
    "series + RP",
    "RP encoder (paper)",
    "default, random encoders",
    "raw index series",
    "NDVI series",
)

#: Forecast part: steps forecast, days kept free before the archive's last day, and its rows.
HORIZON, MARGIN_DAYS = 10, 15
PERSISTENCE, CLIMATOLOGY = "persistence", "climatology"
FORECASTS = (DEFAULT, RAW, PERSISTENCE, CLIMATOLOGY)


@dataclasses.dataclass(frozen=True)
class Family:
    """One scenario family: how its archives differ from the base, and whether it is held out."""

    overrides: Mapping[str, Any]
    """:class:`~pimc_ray.local.archive.ArchiveSpec` fields that differ from the base family."""
    description: str
    held_out: bool = False
    """Declared with the check before any run of it; reported, never used to choose anything."""


#: The families: one factor changed from the base at a time, and two held-out combinations.
FAMILIES: Mapping[str, Family] = {
    "base": Family(
        {}, "shifted calendars (33TTL ~3 weeks late), 180 m fields, shape classes, haze 1, one year"
    ),
    "aligned": Family({"calendar": "aligned"}, "one calendar in both regions"),
    "small-fields": Family({"field_size": 60.0}, "60 m fields: a 9 x 9 patch mixes fields"),
    "level": Family(
        {"class_set": "level"}, "ten classes: an orchard and a grass ley differ from another by level"
    ),
    "clean": Family({"haze": 0.0}, "no aerosol residuals nor unflagged veils"),
    "hazy": Family({"haze": 2.5}, "residuals and unflagged veils on many more dates, thicker"),
    "two-years": Family({"years": 2}, "2021-2022 (72 steps), crops rotating from year to year"),
    "held-out: mosaic": Family(
        {"field_size": 50.0, "class_set": "level", "haze": 2.0},
        "50 m fields, level classes, hazy, shifted calendars",
        held_out=True,
    ),
    "held-out: rotation": Family(
        {"years": 2, "calendar": "aligned", "class_set": "level", "field_size": 90.0},
        "two years, one calendar, level classes, 90 m fields",
        held_out=True,
    ),
}


def build_family(root: Path, family: str, seed: int) -> Any:
    """The archive of one family and seed: two 128-pixel tiles in neighbouring UTM zones."""
    from pimc_ray.local.archive import ArchiveSpec, build_archive

    spec = ArchiveSpec(seed=seed, tile_size=128, tiles=TILES, **FAMILIES[family].overrides)
    return build_archive(root / f"{family.replace(': ', '-')}-{seed}", spec)


def series_spec(archive: Any) -> SeriesSpec:
    """The regular grid of an archive: 36 steps (about 10 days) per year it covers."""
    last, years = archive.spec.year, archive.spec.years
    dates = DateRange(dt.date(last - years + 1, 1, 1), dt.date(last, 12, 31))
    return SeriesSpec(dates=dates, timegrid=TimeGridSpec(steps=36 * years))


def tile_features(
    archive: Any, tile_id: str, encoders: Mapping[str, Any], *, precision: str = "float32"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels ``(P,)`` of every labelled pixel with a valid series and embedding, and each feature set ``(P, D)``.

    The tile is read window by window as the mapping job reads it for each encoder (:func:`series_reader`: blue,
    red and NIR, or all ten bands grown by the patch's halo) and embedded by :meth:`WindowEmbedder.compute`.
    """
    import shapely.geometry
    import torch

    from pimc_ray.local.archive import label_raster, tile_info
    from pimc_ray.mapping.embedder import WindowEmbedder, series_reader

    spec = series_spec(archive)
    tile = tile_info(archive.spec, tile_id)
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    items = archive.read_items("sentinel-2-l2a")
    truth = label_raster(archive.spec, tile_id)
    threads = torch.get_num_threads()
    embedders = {
        k: WindowEmbedder(spec, m, batch_size=2048, threads=threads, precision=precision)
        for k, m in encoders.items()
    }
    ys: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in (*encoders, RAW, NDVI)}
    readers = {k: series_reader(spec, items, m) for k, m in encoders.items()}
    for win in grid.windows(128):
        series = read_series(items, spec, grid, win)
        labels = truth[win.row : win.row + win.height, win.col : win.col + win.width].reshape(-1)
        v = series.values  # (T, 3, P) blue, red, NIR
        indices = vegetation_indices(v[:, 0], v[:, 1], v[:, 2], axis=0)  # (3, T, P)
        feats = {RAW: indices.reshape(-1, win.pixels).T, NDVI: indices[0].T}
        for name, embedder in embedders.items():
            read = series if readers[name].halo == 0 else readers[name](grid, win)
            feats[name] = embedder.compute(grid, win, read).embedding.reshape(embedder.embed_dim, -1).T
        ok = labels > 0
        for f in feats.values():
            ok &= np.isfinite(f).all(axis=1)
        ys.append(labels[ok])
        for name, f in feats.items():
            parts[name].append(f[ok])
    return np.concatenate(ys), {name: np.concatenate(p).astype(np.float32) for name, p in parts.items()}


def probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Overall accuracy of a linear probe: standardised features, multinomial logistic regression, C = 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x_train), y_train)
    return float(np.mean(clf.predict(scaler.transform(x_test)) == y_test))


def regimes(
    x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray, draws: int
) -> dict[str, float]:
    """Accuracy on tile b of probes fit on tile a: all labels, and k labelled pixels per class (mean of draws)."""
    out = {"all": probe(x_a, y_a, x_b, y_b)}
    classes = np.unique(y_a)
    for k in SHOTS:
        accs = []
        for d in range(draws):
            rng = np.random.default_rng(d)
            pick = np.concatenate(
                [
                    rng.choice(np.flatnonzero(y_a == c), size=min(k, int((y_a == c).sum())), replace=False)
                    for c in classes
                ]
            )
            accs.append(probe(x_a[pick], y_a[pick], x_b, y_b))
        out[f"{k}-shot"] = float(np.mean(accs))
    return out


def pretrain(archive: Any, out: Path, *, steps: int, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Pretrain with the code of ``jobs/pretrain.py`` on both tiles' pixels, against a local STAC API over the
    archive, on a local Ray; returns the run's figures and command line (the export lands in ``out``)."""
    import shlex

    import ray
    import shapely.geometry

    from pimc_ray.cli.jobs import pretrain_main
    from pimc_ray.local.archive import tile_info
    from pimc_ray.local.archive_stac import footprint
    from pimc_ray.local.stac_server import LocalStacServer

    spec = series_spec(archive)
    aois = []
    for tile_id in TILES:
        geometry, _ = footprint(tile_info(archive.spec, tile_id))
        inner = shapely.geometry.shape(geometry).buffer(
            -0.0002
        )  # ~15 m inside: no neighbouring tile leaks in
        aois += ["--aoi", json.dumps(shapely.geometry.mapping(inner), separators=(",", ":"))]
    flags = [
        *("--start", spec.dates.start.isoformat(), "--end", spec.dates.end.isoformat()),
        *("--steps", str(spec.timegrid.steps), "--train-steps", str(steps)),
        *("--out", str(out), "--storage", str(out.parent / "runs"), "--name", out.parent.name),
        *("--checkpoint-every", str(steps), "--log-every", str(max(1, steps // 5)), "--seed", str(seed)),
        *("--workers", "2", "--cpus-per-worker", "0.5"),
    ]
    for name, value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(name, value)
    temp = tempfile.mkdtemp(prefix="pimc-lc-", dir="/tmp")  # short: Ray's unix sockets live under it
    t0 = time.perf_counter()
    with LocalStacServer(archive.items_path) as server:
        argv = [*aois, "--stac-url", server.url, *flags]
        log(f"    pretraining: python jobs/pretrain.py {shlex.join(argv)}")
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
        try:
            code = pretrain_main(argv)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"pretraining failed (exit code {code})")
    return {"flags": flags, "seconds": round(time.perf_counter() - t0, 1)}


def run_one(
    root: Path, family: str, seed: int, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """One family and seed: archive, pretraining, features of both tiles, probes both ways."""
    from pimc_ray.models import EncoderConfig, load_checkpoint
    from pimc_ray.training.export import RP_EXPORT

    t0 = time.perf_counter()
    archive = build_family(root / "archives", family, seed)
    export = root / "runs" / f"{family.replace(': ', '-')}-{seed}" / "encoder"
    report: dict[str, Any] = {"family": family, "seed": seed}
    if not (export / "config.json").exists():
        report["pretraining"] = pretrain(archive, export, steps=args.steps, seed=seed, log=log)
    default, config, _ = default_encoder(export, series_spec(archive).timegrid.steps)
    rp_only, _ = load_checkpoint(export / RP_EXPORT)
    random = config.build().eval()
    series_rp = config.params["parts"][:2]  # index-series, rp-resnet
    no_patch = EncoderConfig(name="pimc-concat", params={"parts": series_rp}).build()
    for tower, trained in zip(no_patch.towers, default.towers, strict=False):
        tower.load_state_dict(trained.state_dict())
    encoders = {DEFAULT: default, NO_PATCH: no_patch.eval(), RP_ONLY: rp_only, RANDOM: random}
    (y_a, f_a), (y_b, f_b) = (tile_features(archive, t, encoders) for t in TILES)
    report["pixels"] = [int(len(y_a)), int(len(y_b))]
    report["dims"] = {name: int(f.shape[1]) for name, f in f_a.items()}
    report["results"] = {
        name: {f"{TILES[0]}->{TILES[1]}": regimes(f_a[name], y_a, f_b[name], y_b, args.draws),
               f"{TILES[1]}->{TILES[0]}": regimes(f_b[name], y_b, f_a[name], y_a, args.draws)}
        for name in f_a
    }  # fmt: skip
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def summarise(reports: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{family: {feature set: {regime: {"mean", "worst"}}}}`` over every seed and direction."""
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in reports:
        for name, directions in r["results"].items():
            for by_regime in directions.values():
                for regime, acc in by_regime.items():
                    scores.setdefault(r["family"], {}).setdefault(name, {}).setdefault(regime, []).append(acc)
    return {
        fam: {
            name: {regime: {"mean": float(np.mean(v)), "worst": float(np.min(v))} for regime, v in by.items()}
            for name, by in sets.items()
        }
        for fam, sets in scores.items()
    }


def verdict(summary: Mapping[str, Any]) -> dict[str, bool]:
    """Per family: does the default embedding beat the raw index series (mean): at least equal with all labels,
    better with 1, 5 and 20?"""
    out = {}
    for fam, sets in summary.items():
        d, r = sets[DEFAULT], sets[RAW]
        out[fam] = d["all"]["mean"] >= r["all"]["mean"] and all(
            d[f"{k}-shot"]["mean"] > r[f"{k}-shot"]["mean"] for k in SHOTS
        )
    return out


def table(summary: Mapping[str, Any], dims: Mapping[str, int] | None = None) -> str:
    """A markdown table: per family and feature set, mean (worst) overall accuracy in % per regime."""
    lines = [
        "| family | features | " + " | ".join(f"{r} mean (worst)" for r in REGIMES) + " |",
        "|---|---|" + "---:|" * len(REGIMES),
    ]
    for fam, sets in summary.items():
        known = (DEFAULT, NO_PATCH, RP_ONLY, RANDOM, RAW, NDVI)
        for name in [*known, *(n for n in sets if n not in known)]:
            if name not in sets:
                continue
            cells = [
                f"{100 * sets[name][r]['mean']:.1f} ({100 * sets[name][r]['worst']:.1f})" for r in REGIMES
            ]
            label = f"**{name}**" if name == DEFAULT else name
            lines.append(f"| {fam} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forecast_spec(archive: Any) -> SeriesSpec:
    """The forecast part's context grid: the archive's T steps from its first day, over
    ``floor((S - 15) T / (T + 10))`` of its S days, so that ``HORIZON`` more steps of the same length end at least
    ``MARGIN_DAYS`` before its last day (steps of about 7.6 days for one year, 8.7 for two, not 10)."""
    full = series_spec(archive)
    days, steps = (full.dates.end - full.dates.start).days + 1, full.timegrid.steps
    span = (days - MARGIN_DAYS) * steps // (steps + HORIZON)
    end = full.dates.start + dt.timedelta(days=span - 1)
    return dataclasses.replace(full, dates=DateRange(full.dates.start, end))


def default_encoder(export: Path, steps: int) -> tuple[Any, Any, str]:
    """The default embedding of an export (series + RP + image patch): the module, its
    :class:`~pimc_ray.models.EncoderConfig` and the composite its patches are cut from.

    Exports written before that default (this check's own runs, see docs/learning-check.md) hold series + RP at
    ``<export>``: the default is then built as pretraining exports it now (:func:`default_embedding`), from the
    same run's ``rp/`` and ``rsi/`` exports.
    """
    from pimc_ray.kernels.patches import MEDIAN
    from pimc_ray.models import EncoderConfig, load_checkpoint
    from pimc_ray.training.export import RP_EXPORT, RSI_EXPORT, default_embedding

    model, meta = load_checkpoint(export)
    names = [part["name"] for part in meta["encoder"].get("params", {}).get("parts", [])]
    if "rsi-cnn" in names:
        return (
            model,
            EncoderConfig.from_dict(meta["encoder"]),
            (meta.get("patches") or {}).get("composite", MEDIAN),
        )
    rp, rp_meta = load_checkpoint(export / RP_EXPORT)
    rsi, rsi_meta = load_checkpoint(export / RSI_EXPORT)
    configs = (EncoderConfig.from_dict(m["encoder"]) for m in (rp_meta, rsi_meta))
    config = default_embedding(*configs, steps)
    default = config.build()
    default.towers[1].load_state_dict(rp.state_dict())
    default.towers[2].load_state_dict(rsi.state_dict())
    return default.eval(), config, (rsi_meta.get("patches") or {}).get("composite", MEDIAN)


def forecast_features(
    archive: Any,
    tile_id: str,
    spec: SeriesSpec,
    encoder: Any,
    composite: str,
    *,
    pixels: int,
    seed: int,
    precision: str = "float32",
) -> dict[str, np.ndarray]:
    """A tile's pixels with a valid embedding, context series and targets (a seeded sample of at most ``pixels``):
    ``embedding`` (P, D), ``raw`` (P, 3 T) NDVI, EVI and SAVI on the context grid (index-major, as the embedding's
    series part), ``future`` (P, 3, HORIZON).

    Read by :class:`ForecastReader` over the whole archive (the context from observations before the grid's end
    only), embedded by :meth:`WindowEmbedder.compute`, as the forecast head's fitting does.
    """
    import shapely.geometry
    import torch

    from pimc_ray.local.archive import tile_info
    from pimc_ray.mapping.embedder import WindowEmbedder, series_reader
    from pimc_ray.mapping.forecast import ForecastReader

    tile = tile_info(archive.spec, tile_id)
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    items = archive.read_items("sentinel-2-l2a")
    reader = ForecastReader(series_reader(spec, items, encoder), HORIZON)
    embedder = WindowEmbedder(
        spec,
        encoder,
        batch_size=2048,
        threads=torch.get_num_threads(),
        composite=composite,
        precision=precision,
    )
    halo, bands = reader.context.halo, reader.context.spec.bands
    positions = [bands.index(b) for b in INDEX_BANDS]
    parts: dict[str, list[np.ndarray]] = {"embedding": [], "raw": [], "future": []}
    for win in grid.windows(128):
        series, future = reader(grid, win)
        emb = embedder.compute(grid, win, series).embedding.reshape(embedder.embed_dim, -1).T
        v = crop_halo(series.values[:, positions], win.height, win.width, halo)  # (T, 3, P) blue, red, NIR
        raw = vegetation_indices(v[:, 0], v[:, 1], v[:, 2], axis=0).reshape(-1, win.pixels).T
        y = future.transpose(2, 0, 1)
        ok = np.isfinite(emb).all(axis=1) & np.isfinite(raw).all(axis=1) & np.isfinite(y).all(axis=(1, 2))
        for name, f in (("embedding", emb), ("raw", raw), ("future", y)):
            parts[name].append(f[ok].astype(np.float32))
    out = {name: np.concatenate(p) for name, p in parts.items()}
    n = len(out["future"])
    if n > pixels:
        keep = np.sort(np.random.default_rng([seed, TILES.index(tile_id)]).choice(n, pixels, replace=False))
        out = {name: f[keep] for name, f in out.items()}
    return out


def forecast_rmse(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], spec: SeriesSpec, last: Sequence[int]
) -> dict[str, dict[str, float]]:
    """RMSE per index over ``test``'s pixels and the ``HORIZON`` steps of each forecast fit on ``train``."""
    from pimc_ray.data.timegrid import step_days
    from pimc_ray.models.heads import LinearForecaster

    steps = spec.timegrid.steps
    days = step_days(spec.dates.start, spec.dates.end, steps)
    raw_last = [steps - 1, 2 * steps - 1, 3 * steps - 1]
    y, y_test = train["future"], test["future"]

    def head(x: np.ndarray, x_test: np.ndarray, positions: Sequence[int]) -> np.ndarray:
        fitted = LinearForecaster(x.shape[1], HORIZON, positions, steps, days).fit(x, y)
        return fitted.predict(x_test)

    predictions = {
        DEFAULT: head(train["embedding"], test["embedding"], last),
        RAW: head(train["raw"], test["raw"], raw_last),
        PERSISTENCE: np.repeat(test["raw"][:, raw_last, None], HORIZON, axis=2),
        CLIMATOLOGY: np.broadcast_to(y.mean(axis=0), y_test.shape),
    }
    return {
        name: dict(
            zip(INDEX_NAMES, map(float, np.sqrt(np.mean((p - y_test) ** 2, axis=(0, 2)))), strict=True)
        )
        for name, p in predictions.items()
    }


def forecast_one(root: Path, family: str, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """One family and seed of the forecast part, both directions; ``None`` when the run has no export."""
    from pimc_ray.data.series import iso_dates
    from pimc_ray.mapping.forecast import forecast_dates, last_positions

    export = root / "runs" / f"{family.replace(': ', '-')}-{seed}" / "encoder"
    if not (export / "config.json").exists():
        print(f"    no export at {export}: skipped (run the classification check first)", flush=True)
        return None
    t0 = time.perf_counter()
    archive = build_family(root / "archives", family, seed)
    spec = forecast_spec(archive)
    encoder, _, composite = default_encoder(export, spec.timegrid.steps)
    last = last_positions(encoder, spec)
    a, b = (
        forecast_features(archive, t, spec, encoder, composite, pixels=args.forecast_pixels, seed=seed)
        for t in TILES
    )
    dates = iso_dates(forecast_dates(spec, HORIZON))
    return {
        "family": family,
        "seed": seed,
        "context": [spec.dates.start.isoformat(), spec.dates.end.isoformat(), spec.timegrid.steps],
        "forecast_dates": [dates[0], dates[-1]],
        "pixels": [len(a["future"]), len(b["future"])],
        "dims": {DEFAULT: int(a["embedding"].shape[1]), RAW: int(a["raw"].shape[1])},
        "rmse": {
            f"{TILES[0]}->{TILES[1]}": forecast_rmse(a, b, spec, last),
            f"{TILES[1]}->{TILES[0]}": forecast_rmse(b, a, spec, last),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def forecast_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{family: {forecast: {index: {"mean", "worst"}}}}`` RMSE over every seed and direction (worst: largest)."""
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        for by_name in r["rmse"].values():
            for name, by_index in by_name.items():
                for index, v in by_index.items():
                    scores.setdefault(r["family"], {}).setdefault(name, {}).setdefault(index, []).append(v)
    return {
        fam: {
            name: {i: {"mean": float(np.mean(v)), "worst": float(np.max(v))} for i, v in by.items()}
            for name, by in rows.items()
        }
        for fam, rows in scores.items()
    }


def forecast_table(summary: Mapping[str, Any]) -> str:
    """A markdown table: per family and forecast, mean (worst) RMSE per index."""
    lines = [
        "| family | forecast | " + " | ".join(f"{i} mean (worst)" for i in INDEX_NAMES) + " |",
        "|---|---|" + "---:|" * len(INDEX_NAMES),
    ]
    for fam, rows in summary.items():
        for name in (n for n in FORECASTS if n in rows):
            cells = [f"{rows[name][i]['mean']:.4f} ({rows[name][i]['worst']:.4f})" for i in INDEX_NAMES]
            label = f"**{name}**" if name == DEFAULT else name
            lines.append(f"| {fam} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def forecast_check(args: argparse.Namespace, families: Sequence[str]) -> int:
    """The forecast part over the runs whose export exists; writes ``<out>/forecast.json`` and adds its summary
    to ``<out>/results.json``."""
    t0 = time.perf_counter()
    runs = []
    for family in families:
        for seed in range(args.seeds):
            print(f"[{time.perf_counter() - t0:.0f}s] forecast: {family}, seed {seed}", flush=True)
            run = forecast_one(args.out, family, seed, args)
            if run is not None:
                runs.append(run)
    summary = forecast_summary(runs)
    result = {
        "horizon": HORIZON,
        "margin_days": MARGIN_DAYS,
        "pixels_per_tile": args.forecast_pixels,
        "summary": summary,
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "forecast.json").write_text(json.dumps(result, indent=1))
    results = args.out / "results.json"
    if results.exists():
        merged = json.loads(results.read_text())
        merged["forecast"] = {k: v for k, v in result.items() if k != "runs"}
        results.write_text(json.dumps(merged, indent=1))
    print(forecast_table(summary))
    print(f"forecast check done in {result['seconds']} s; {args.out / 'forecast.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/learning-check"))
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated family names")
    p.add_argument("--seeds", type=int, default=2, help="archive (and pretraining) seeds per family")
    p.add_argument("--steps", type=int, default=500, help="pretraining steps of 256 pairs")
    p.add_argument("--draws", type=int, default=10, help="few-shot draws averaged per regime")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="summarise <out>/runs.json again (e.g. runs of several calls)",
    )
    p.add_argument(
        "--forecast-only",
        action="store_true",
        help="only the forecast part, on the exports already in <out>/runs (never pretrains)",
    )
    p.add_argument(
        "--forecast-pixels", type=int, default=20_000, help="forecast pixels kept per tile at most"
    )
    args = p.parse_args(argv)
    if args.report_only:
        return report(args, json.loads((args.out / "runs.json").read_text()), seconds=0.0)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; choose from {list(FAMILIES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.forecast_only:
        return forecast_check(args, families)
    t0 = time.perf_counter()
    reports = []
    for family in families:
        for seed in range(args.seeds):
            print(f"[{time.perf_counter() - t0:.0f}s] {family}, seed {seed}", flush=True)
            reports.append(run_one(args.out, family, seed, args, lambda msg: print(msg, flush=True)))
            (args.out / "runs.json").write_text(json.dumps(reports, indent=1))
    return report(args, reports, seconds=time.perf_counter() - t0)


def report(args: argparse.Namespace, reports: Sequence[Mapping[str, Any]], *, seconds: float) -> int:
    """Summary, verdicts and table of the runs; writes ``<out>/results.json``."""
    summary = summarise(reports)
    verdicts = verdict(summary)
    families = list(dict.fromkeys(r["family"] for r in reports))
    result = {
        "families": {f: dataclasses.asdict(FAMILIES[f]) for f in families},
        "steps": args.steps,
        "seeds": sorted({int(r["seed"]) for r in reports}),
        "draws": args.draws,
        "summary": summary,
        "default_beats_raw": verdicts,
        "seconds": round(seconds, 1),
    }
    forecast = args.out / "forecast.json"
    if forecast.exists():  # the forecast part's summary (--forecast-only) stays beside the probes'
        result["forecast"] = {k: v for k, v in json.loads(forecast.read_text()).items() if k != "runs"}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(table(summary))
    print(
        "default embedding beats the raw index series (mean): "
        + ", ".join(f"{f}: {v}" for f, v in verdicts.items())
    )
    print(f"learning check done in {result['seconds']} s; {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
