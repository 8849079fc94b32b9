"""Learning check: does PIMC pretraining give embeddings a user can map with, better than simple features?

On the sample archive, a linear probe (multinomial logistic regression on standardised features,
:class:`pimc_ray.models.LinearClassifier`) is trained on the labelled pixels of one tile and tested on every
labelled pixel of another tile (another UTM zone, other fields, same class statistics), for five feature sets:

* ``PIMC``: the RP encoder after contrastive pretraining (64-d);
* ``random RP encoder``: the same architecture, randomly initialised (64-d);
* ``raw index series``: NDVI, EVI and SAVI on the regular 36-step grid (108-d);
* ``monthly NDVI``: NDVI averaged per calendar month (12-d);
* ``monthly bands``: all ten bands averaged per calendar month (120-d).

With all labelled pixels of the training tile, and few-shot: 1, 5 and 20 labelled pixels per class, averaged
over ``--seeds`` draws. Overall accuracy (OA) and macro-F1 on the test tile.

    python benchmarks/learning_check.py --archive data/archive --out out/learning-check          # pretrains
    python benchmarks/learning_check.py --archive data/archive --checkpoint data/models/pimc-demo  # reuses

Pretraining runs the real pipeline (Ray Data pair stream -> Ray Train TorchTrainer) on a local Ray with the
tiles given by ``--pretrain-tiles`` (by default the two zone-32 tiles: the test tile is never seen).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.catalogs import BANDS  # noqa: E402
from pimc_ray.indices import vegetation_indices  # noqa: E402
from pimc_ray.pairs import RP_BAND_INDEX, items_over  # noqa: E402
from pimc_ray.series import INDEX_BANDS, SeriesSpec, read_series  # noqa: E402
from pimc_ray.stac import DateRange  # noqa: E402
from pimc_ray.tiles import OutputGrid  # noqa: E402
from pimc_ray.timegrid import TimeGridSpec  # noqa: E402

SHOTS = (1, 5, 20)
FEATURES = ("PIMC", "random RP encoder", "raw index series", "monthly NDVI", "monthly bands")


def tile_grid_of(archive: Any, tile_id: str) -> OutputGrid:
    """The tile's own 10 m grid (its UTM CRS and bounds)."""
    import shapely.geometry

    from pimc_ray.testing.archive import tile_info

    tile = tile_info(archive.spec, tile_id)
    return OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))


def labelled_series(
    archive: Any, tile_id: str, spec: SeriesSpec, *, window: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """``(series (P, 10, T) float32, labels (P,) uint8)`` of every labelled pixel of a tile with a valid series."""
    from pimc_ray.testing.archive import label_raster

    items = archive.read_items("sentinel-2-l2a")
    grid = tile_grid_of(archive, tile_id)
    truth = label_raster(archive.spec, tile_id)
    xs, ys = [], []
    for win in grid.windows(window):
        values = read_series(items_over(items, grid, win), spec, grid, win).values  # (T, 10, P)
        labels = truth[win.row : win.row + win.height, win.col : win.col + win.width].reshape(-1)
        ok = (labels > 0) & np.isfinite(values).all(axis=(0, 1))
        xs.append(values[:, :, ok].transpose(2, 1, 0))
        ys.append(labels[ok])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def month_means(values: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """``(P, C, T)`` regular-grid values -> ``(P, C * 12)`` means per calendar month."""
    months = dates.astype("datetime64[M]").astype(int) % 12
    return np.concatenate([values[:, :, months == m].mean(axis=2) for m in range(12)], axis=1)


def embed(series: np.ndarray, encoder: Any, spec: SeriesSpec) -> np.ndarray:
    """RP-encoder embeddings ``(P, D)`` of ``(P, 10, T)`` series, through the mapping job's own code path."""
    import torch

    from pimc_ray.infer import WindowEmbedder

    rp = np.ascontiguousarray(series[:, list(RP_BAND_INDEX)].transpose(2, 1, 0))  # (T, 3, P)
    rp_spec = dataclasses.replace(spec, bands=INDEX_BANDS)
    embedder = WindowEmbedder(rp_spec, [], encoder, batch_size=2048, threads=torch.get_num_threads())
    return embedder.embed_series(rp)


def feature_sets(series: np.ndarray, spec: SeriesSpec, encoders: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every feature set of ``(P, 10, T)`` series."""
    blue, red, nir = (series[:, i] for i in RP_BAND_INDEX)
    indices = vegetation_indices(blue, red, nir, axis=1)  # (P, 3, T)
    dates = spec.grid_dates()
    out = {name: embed(series, encoder, spec) for name, encoder in encoders.items()}
    out["raw index series"] = indices.reshape(len(series), -1)
    out["monthly NDVI"] = month_means(indices[:, :1], dates)
    out["monthly bands"] = month_means(series, dates)
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int]) -> float:
    """Unweighted mean over ``classes`` of F1 = 2 TP / (2 TP + FP + FN) (0 for a class never seen nor predicted)."""
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, classes: Sequence[int]
) -> tuple[float, float]:
    """``(overall accuracy, macro-F1)`` of a logistic-regression probe fit on train, scored on test."""
    from pimc_ray.models.heads import LinearClassifier

    head = LinearClassifier(x_train.shape[1], list(classes)).fit(x_train, y_train)
    pred, _ = head.predict(x_test)
    return float(np.mean(pred == y_test)), macro_f1(y_test, pred, classes)


def evaluate(
    train: Mapping[str, np.ndarray],
    y_train: np.ndarray,
    test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    seeds: int,
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{feature: {regime: (OA, macro-F1)}}`` for the regimes ``all`` and ``<k>-shot``."""
    from pimc_ray.infer import balanced_sample

    classes = sorted(int(c) for c in np.unique(y_train))
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name in train:
        results[name] = {"all": probe(train[name], y_train, test[name], y_test, classes)}
        for shots in SHOTS:
            runs = []
            for seed in range(seeds):
                x, y = balanced_sample(train[name], y_train, per_class=shots, seed=seed)
                runs.append(probe(x, y, test[name], y_test, classes))
            results[name][f"{shots}-shot"] = tuple(np.mean(runs, axis=0).tolist())  # type: ignore[assignment]
        progress(f"  {name}: " + ", ".join(f"{k} OA {v[0]:.3f}" for k, v in results[name].items()))
    return results


def table(results: Mapping[str, Mapping[str, tuple[float, float]]]) -> str:
    """A markdown table: one row per feature set, OA / macro-F1 per regime, in percent."""
    regimes = ["all"] + [f"{k}-shot" for k in SHOTS]
    lines = [
        "| features | dim | " + " | ".join(f"{r} OA | {r} F1" for r in regimes) + " |",
        "|---|---:|" + "---:|" * (2 * len(regimes)),
    ]
    for name, row in results.items():
        cells = [f"{100 * row[r][0]:.1f} | {100 * row[r][1]:.1f}" for r in regimes]
        lines.append(f"| {name} | {row.get('dim', ('', ''))[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pretrain_encoder(args: argparse.Namespace, archive: Any, spec: SeriesSpec) -> tuple[Path, dict[str, Any]]:
    """Run PIMC pretraining on the archive (Ray Data + Ray Train on a local Ray); returns the export folder."""
    import ray

    from pimc_ray.models.pimc import PIMCConfig
    from pimc_ray.pairs import PairSpec, PairStream, training_tasks
    from pimc_ray.train import RunSpec, TrainConfig, pretrain

    items = archive.read_items("sentinel-2-l2a")
    grids = [tile_grid_of(archive, t) for t in args.pretrain_tiles.split(",")]
    pair_spec = PairSpec(
        spec,
        patch_size=args.patch_size,
        composite=args.composite,
        pixels_per_window=args.pixels_per_window,
        seed=args.seed,
    )
    stream = PairStream(
        items, training_tasks(grids, pair_spec.window_size), pair_spec, readers=1, reader_cpus=1
    )
    model = PIMCConfig()
    if args.patch_size != model.patch_size:
        model = PIMCConfig(
            rsi=type(model.rsi)(name="rsi-cnn", params={**model.rsi.params, "patch_size": args.patch_size})
        )
    config = TrainConfig(
        model=model,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=max(1, args.steps // 4),
        log_every=max(1, args.steps // 20),
        seed=args.seed,
    )
    run = RunSpec(
        name=f"learning-check-{args.seed}",
        storage_path=str(args.out / "runs"),
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
    )
    import shutil
    import tempfile

    for name, value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(name, value)
    temp = tempfile.mkdtemp(prefix="pimc-lc-", dir="/tmp")  # short: Ray's unix sockets live under it
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, _temp_dir=temp)
    try:
        result = pretrain(stream, config, run, export_to=args.out / "encoder", progress=print)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return args.out / "encoder", {
        "steps": result.step,
        "loss": result.metrics.get("loss"),
        "seconds": result.seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", type=Path, default=Path("data/archive"), help="built (or reused) here")
    p.add_argument("--out", type=Path, default=Path("out/learning-check"))
    p.add_argument("--checkpoint", type=Path, help="a pretrained RP encoder; default: pretrain now")
    p.add_argument("--train-tile", default="32TQR")
    p.add_argument("--test-tile", default="33TTL")
    p.add_argument("--pretrain-tiles", default="32TQR,32TQS")
    p.add_argument("--steps", type=int, default=600, help="pretraining steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patch-size", type=int, default=9)
    p.add_argument("--composite", default="median")
    p.add_argument("--pixels-per-window", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--seeds", type=int, default=10, help="few-shot draws averaged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated feature sets to leave out (e.g. PIMC)")
    args = p.parse_args(argv)

    import torch

    from pimc_ray.models import EncoderConfig, load_checkpoint
    from pimc_ray.testing.archive import ArchiveSpec, build_archive

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    archive = build_archive(args.archive, ArchiveSpec())
    spec = SeriesSpec(
        dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)), timegrid=TimeGridSpec(36), bands=BANDS
    )
    report: dict[str, Any] = {"train_tile": args.train_tile, "test_tile": args.test_tile}
    skip = set(filter(None, args.skip.split(",")))
    encoders: dict[str, Any] = {}
    if "PIMC" not in skip:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint, report["pretraining"] = pretrain_encoder(args, archive, spec)
            print(f"pretraining: {report['pretraining']}")
        encoders["PIMC"], meta = load_checkpoint(checkpoint, expect=EncoderConfig())
        report["checkpoint"] = {"path": str(checkpoint), "trained": meta.get("trained")}
    if "random RP encoder" not in skip:
        encoders["random RP encoder"] = EncoderConfig().build().eval()
    torch.set_num_threads(os.cpu_count() or 1)

    t1 = time.perf_counter()
    x_train, y_train = labelled_series(archive, args.train_tile, spec)
    x_test, y_test = labelled_series(archive, args.test_tile, spec)
    train = feature_sets(x_train, spec, encoders)
    test = feature_sets(x_test, spec, encoders)
    train = {k: v for k, v in train.items() if k not in skip}
    print(f"features of {len(y_train)} + {len(y_test)} labelled pixels in {time.perf_counter() - t1:.0f} s")
    results = evaluate(train, y_train, test, y_test, seeds=args.seeds)
    for name in results:
        results[name]["dim"] = (train[name].shape[1], 0)  # type: ignore[assignment]
    print(table(results))
    report.update({"results": results, "seconds": round(time.perf_counter() - t0, 1)})
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"learning check done in {report['seconds']} s; {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
