"""Learning check: does PIMC pretraining give embeddings a user can map with, better than simple features?

On the sample archive, a linear probe (multinomial logistic regression on standardised features,
:class:`pimc_ray.models.LinearClassifier`) is trained on the labelled pixels of one tile and tested on every
labelled pixel of another tile (another UTM zone, other fields, the same classes, a calendar about 25 days later:
it lies higher), for these feature sets:

* ``PIMC``: the RP encoder after contrastive pretraining (64-d);
* ``PIMC image patch``: the image-patch (RSI) encoder of the same run, on the pixel's 9 x 9 median patch (64-d);
* ``PIMC RP + image patch``: both side by side, the ``pimc-joint`` export (128-d);
* ``random RP encoder``, ``random RP + image patch``: the same architectures, randomly initialised;
* ``raw index series``: NDVI, EVI and SAVI on the regular 36-step grid (108-d);
* ``monthly NDVI``: NDVI averaged per calendar month (12-d);
* ``monthly bands``: all ten bands averaged per calendar month (120-d);
* controls, ``raw index series, shifted copies`` and ``monthly bands, shifted copies``: the same features, the
  probe trained on copies of each labelled pixel moved -2..2 grid steps (``--control-shift``), the augmentation
  pretraining uses, given to the baselines instead.

With all labelled pixels of the training tile, and few-shot: 1, 5 and 20 labelled pixels per class, averaged
over ``--seeds`` draws. Overall accuracy (OA) and macro-F1 on the test tile.

    python benchmarks/learning_check.py --archive data/archive --out out/learning-check          # pretrains
    python benchmarks/learning_check.py --archive data/archive --checkpoint data/models/pimc-demo  # reuses

Pretraining runs the code of ``jobs/pretrain.py`` (Ray Data pair stream -> Ray Train TorchTrainer) on a local Ray,
against a local STAC API over the archive, on the tiles given by ``--pretrain-tiles`` (by default the two zone-32
tiles: the test tile is never seen). ``--test-shifts -2`` also scores the series-based feature sets with the test
tile's series moved 20 days earlier, i.e. on about the training tile's calendar.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.data.catalogs import BANDS  # noqa: E402
from pimc_ray.data.series import INDEX_BAND_POSITIONS, INDEX_BANDS, SeriesSpec, crop_halo, read_series  # noqa: E402
from pimc_ray.data.stac import DateRange  # noqa: E402
from pimc_ray.data.tiles import OutputGrid  # noqa: E402
from pimc_ray.data.timegrid import TimeGridSpec  # noqa: E402
from pimc_ray.kernels.indices import vegetation_indices  # noqa: E402
from pimc_ray.training.loop import move_series  # noqa: E402
from pimc_ray.training.pairs import items_over  # noqa: E402

SHOTS = (1, 5, 20)
#: Simple feature sets that also get a control probe trained on copies of the series moved in time
#: (``--control-shift``): the augmentation PIMC's pretraining uses, given to the baselines' probes instead.
SHIFTED_CONTROLS = ("raw index series", "monthly bands")
#: Feature sets of the joint encoders (exported to ``<encoder>/joint`` by pretraining).
JOINT, JOINT_PART, RANDOM_JOINT = "PIMC RP + image patch", "PIMC image patch", "random RP + image patch"


def with_parts(embeddings: Mapping[str, np.ndarray], joint: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The joint encoders' embeddings, plus the pretrained one's image-patch half on its own."""
    out = dict(embeddings)
    if JOINT in out:
        out[JOINT_PART] = out[JOINT][:, int(joint[JOINT].rp.embed_dim) :]
    return out


def tile_grid_of(archive: Any, tile_id: str) -> OutputGrid:
    """The tile's own 10 m grid (its UTM CRS and bounds)."""
    import shapely.geometry

    from pimc_ray.local.archive import tile_info

    tile = tile_info(archive.spec, tile_id)
    return OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))


def labelled_pixels(
    archive: Any, tile_id: str, spec: SeriesSpec, joint: Mapping[str, Any], *, window: int = 128
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every labelled pixel of a tile with a valid series (and a valid embedding for each joint encoder).

    Returns ``(series (P, 10, T) float32, labels (P,) uint8, {name: embeddings (P, D)})``. Windows are read grown
    by the joint encoders' halo with all ten bands, as the mapping job reads them, and embedded through its own
    :meth:`~pimc_ray.mapping.embedder.WindowEmbedder.compute`; a pixel whose patch reaches nodata (at the archive's
    edge) is left out of every feature set, so all are scored on the same pixels.
    """
    import torch

    from pimc_ray.local.archive import label_raster
    from pimc_ray.mapping.embedder import WindowEmbedder

    items = archive.read_items("sentinel-2-l2a")
    grid = tile_grid_of(archive, tile_id)
    truth = label_raster(archive.spec, tile_id)
    m = max((int(e.halo) for e in joint.values()), default=0)
    plots_spec = dataclasses.replace(spec, bands=INDEX_BANDS)
    threads = torch.get_num_threads()
    embedders = {k: WindowEmbedder(plots_spec, e, batch_size=2048, threads=threads) for k, e in joint.items()}
    xs, ys, embs = [], [], {name: [] for name in joint}
    for win in grid.windows(window):
        grown = win.grown(m, grid.resolution)
        series = read_series(items_over(items, grid, grown), spec, grid, grown)
        h, w = win.height, win.width
        values = crop_halo(series.values, h, w, m)  # (T, 10, P): the window's own pixels
        labels = truth[win.row : win.row + h, win.col : win.col + w].reshape(-1)
        ok = (labels > 0) & np.isfinite(values).all(axis=(0, 1))
        window_embs = {}
        for name, embedder in embedders.items():
            emb = embedder.compute(grid, win, series).embedding.reshape(embedder.embed_dim, -1).T  # (P, D)
            window_embs[name] = emb
            ok &= np.isfinite(emb).all(axis=1)
        xs.append(values[:, :, ok].transpose(2, 1, 0))
        ys.append(labels[ok])
        for name, emb in window_embs.items():
            embs[name].append(emb[ok])
    return (
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys),
        {name: np.concatenate(parts) for name, parts in embs.items()},
    )


def month_means(values: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """``(P, C, T)`` regular-grid values -> ``(P, C * 12)`` means per calendar month."""
    months = dates.astype("datetime64[M]").astype(int) % 12
    return np.concatenate([values[:, :, months == m].mean(axis=2) for m in range(12)], axis=1)


def embed(series: np.ndarray, encoder: Any, spec: SeriesSpec) -> np.ndarray:
    """RP-encoder embeddings ``(P, D)`` of ``(P, 10, T)`` series, through the mapping job's own code path."""
    import torch

    from pimc_ray.mapping.embedder import WindowEmbedder

    rp = np.ascontiguousarray(series[:, INDEX_BAND_POSITIONS].transpose(2, 1, 0))  # (T, 3, P)
    rp_spec = dataclasses.replace(spec, bands=INDEX_BANDS)
    embedder = WindowEmbedder(rp_spec, encoder, batch_size=2048, threads=torch.get_num_threads())
    return embedder.embed_series(rp)


def feature_sets(series: np.ndarray, spec: SeriesSpec, encoders: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every feature set of ``(P, 10, T)`` series."""
    blue, red, nir = (series[:, i] for i in INDEX_BAND_POSITIONS)
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
    train: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    y_train: np.ndarray,
    test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    seeds: int,
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, tuple[float, float]]]:
    """``{feature: {regime: (OA, macro-F1)}}`` for the regimes ``all`` and ``<k>-shot``.

    A training feature set is ``(P, D)``, or several views of the same ``P`` pixels (e.g. their series moved
    in time): the probe then learns from every view of each labelled pixel it is given.
    """
    from pimc_ray.data.labels import balanced_sample

    classes = sorted(int(c) for c in np.unique(y_train))
    pixels = np.arange(len(y_train))[:, None]

    def fit_on(views: Sequence[np.ndarray], idx: np.ndarray, x_test: np.ndarray) -> tuple[float, float]:
        x = np.concatenate([v[idx] for v in views])
        return probe(x, np.tile(y_train[idx], len(views)), x_test, y_test, classes)

    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, features in train.items():
        views = [features] if isinstance(features, np.ndarray) else list(features)
        results[name] = {"all": fit_on(views, pixels[:, 0], test[name])}
        for shots in SHOTS:
            picks = [
                balanced_sample(pixels, y_train, per_class=shots, seed=seed)[0][:, 0] for seed in range(seeds)
            ]
            runs = [fit_on(views, idx, test[name]) for idx in picks]
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


def pretrain_encoder(args: argparse.Namespace, archive: Any) -> tuple[Path, dict[str, Any]]:
    """Pretrain with the code of ``jobs/pretrain.py`` against a local STAC API over the archive, on a local Ray.

    Returns the export folder and the run's figures; the job's command line is printed and kept in the report.
    """
    import shutil
    import tempfile

    import ray
    import shapely.geometry

    from pimc_ray.cli.jobs import pretrain_main
    from pimc_ray.local.archive import tile_info
    from pimc_ray.local.archive_stac import footprint
    from pimc_ray.local.stac_server import LocalStacServer

    aois = []
    for tile_id in args.pretrain_tiles.split(","):
        geometry, _ = footprint(tile_info(archive.spec, tile_id))
        inner = shapely.geometry.shape(geometry).buffer(-0.001)  # ~80 m inside: no neighbouring tile leaks in
        aois += ["--aoi", json.dumps(shapely.geometry.mapping(inner), separators=(",", ":"))]
    out = args.out / "encoder"
    flags = [
        *("--start", "2022-01-01", "--end", "2022-12-31", "--steps", "36"),
        *("--out", str(out), "--storage", str(args.out / "runs"), "--name", f"learning-check-{args.seed}"),
        *("--train-steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr)),
        *("--checkpoint-every", str(max(1, args.steps // 4)), "--log-every", str(max(1, args.steps // 20))),
        *("--patch-size", str(args.patch_size), "--composite", args.composite),
        *("--pixels-per-window", str(args.pixels_per_window), "--time-shift", str(args.time_shift)),
        *("--workers", str(args.workers), "--cpus-per-worker", str(args.cpus_per_worker)),
        *("--seed", str(args.seed)),
    ]
    for name, value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(name, value)
    temp = tempfile.mkdtemp(prefix="pimc-lc-", dir="/tmp")  # short: Ray's unix sockets live under it
    t0 = time.perf_counter()
    with LocalStacServer(archive.items_path) as server:
        argv = [*aois, "--stac-url", server.url, *flags]
        print(f"pretraining: python jobs/pretrain.py {shlex.join(argv)}", flush=True)
        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, _temp_dir=temp)
        try:
            code = pretrain_main(argv)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"pretraining failed (exit code {code})")
    return out, {"flags": flags, "tiles": args.pretrain_tiles, "seconds": round(time.perf_counter() - t0, 1)}


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
    p.add_argument("--time-shift", type=int, default=2, help="pretraining augmentation, in grid steps")
    p.add_argument("--pixels-per-window", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=0.5)
    p.add_argument("--seeds", type=int, default=10, help="few-shot draws averaged")
    p.add_argument(
        "--control-shift",
        type=int,
        default=2,
        help="controls: probes of raw series and monthly bands trained on copies moved -N..N steps (0: none)",
    )
    p.add_argument(
        "--test-shifts",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[],
        help="also score the test tile with its series moved this many grid steps later (negative: earlier)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated feature sets to leave out (e.g. PIMC)")
    args = p.parse_args(argv)

    import torch

    from pimc_ray.local.archive import ArchiveSpec, build_archive
    from pimc_ray.models import EncoderConfig, load_checkpoint
    from pimc_ray.models.checkpoint import read_encoder_config
    from pimc_ray.training.export import JOINT_EXPORT

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    archive = build_archive(args.archive, ArchiveSpec())
    spec = SeriesSpec(
        dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)), timegrid=TimeGridSpec(36), bands=BANDS
    )
    report: dict[str, Any] = {"train_tile": args.train_tile, "test_tile": args.test_tile}
    skip = set(filter(None, args.skip.split(",")))
    encoders: dict[str, Any] = {}  # plot encoders, on the pixels' series
    joint: dict[str, Any] = {}  # both towers, on windows read as the mapping job reads them
    if "PIMC" not in skip:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint, report["pretraining"] = pretrain_encoder(args, archive)
            print(f"pretraining: {report['pretraining']}")
        encoders["PIMC"], meta = load_checkpoint(checkpoint, expect=EncoderConfig())
        report["checkpoint"] = {"path": str(checkpoint), "trained": meta.get("trained")}
        if (checkpoint / JOINT_EXPORT / "config.json").exists():  # exports before the joint encoder lack it
            joint[JOINT], _ = load_checkpoint(checkpoint / JOINT_EXPORT)
            if RANDOM_JOINT not in skip:
                joint[RANDOM_JOINT] = read_encoder_config(checkpoint / JOINT_EXPORT).build().eval()
    if "random RP encoder" not in skip:
        encoders["random RP encoder"] = EncoderConfig().build().eval()
    torch.set_num_threads(os.cpu_count() or 1)

    t1 = time.perf_counter()
    x_train, y_train, joint_train = labelled_pixels(archive, args.train_tile, spec, joint)
    x_test, y_test, joint_test = labelled_pixels(archive, args.test_tile, spec, joint)
    train: dict[str, Any] = {**feature_sets(x_train, spec, encoders), **with_parts(joint_train, joint)}
    if args.control_shift:  # controls: the simple features, the probe trained on calendar-shifted copies
        steps = range(-args.control_shift, args.control_shift + 1)
        moved = [feature_sets(move_series(x_train, s), spec, {}) for s in steps]
        for name in SHIFTED_CONTROLS:
            train[f"{name}, shifted copies"] = [views[name] for views in moved]
    train = {k: v for k, v in train.items() if k not in skip}
    print(f"features of {len(y_train)} + {len(y_test)} labelled pixels in {time.perf_counter() - t1:.0f} s")
    results: dict[str, Any] = {}
    for shift in sorted({0, *args.test_shifts}):
        # the joint encoders see windows, not series: they are scored on the tile as it is only
        test = feature_sets(move_series(x_test, shift), spec, encoders)
        test.update(with_parts(joint_test, joint) if shift == 0 else {})
        test.update({f"{name}, shifted copies": test[name] for name in SHIFTED_CONTROLS})
        scored = {k: v for k, v in train.items() if k in test}
        results[str(shift)] = evaluate(scored, y_train, test, y_test, seeds=args.seeds)
        for name in results[str(shift)]:
            first = train[name] if isinstance(train[name], np.ndarray) else train[name][0]
            results[str(shift)][name]["dim"] = (first.shape[1], 0)
        print(f"test tile {args.test_tile}, its series shifted by {shift} grid steps:")
        print(table(results[str(shift)]))
    report.update(
        {"results": results.pop("0"), "shifted": results, "seconds": round(time.perf_counter() - t0, 1)}
    )
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"learning check done in {report['seconds']} s; {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
