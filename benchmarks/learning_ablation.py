"""Ablation of the default embedding's design, in one process: which parts beat the index series, and their cost.

For each scenario family (``learning_check.FAMILIES``, one seed), every pixel of the two 128-pixel tiles is read
once; then each RP encoder variant is pretrained **in this process** (no Ray: the same PIMC loss, RSI encoder,
projection heads, time-shift augmentation, schedule and batch size as ``jobs/pretrain.py``, but pairs drawn
uniformly from all valid pixels, so that a variant costs a minute, not five) and combined with the index series
and the image-patch embedding. The same probes as the learning check score every combination (linear probe on
one tile, tested on the other, both directions, all labels and 1, 5, 20 per class).

Costs: forward MFLOP per pixel of each embedding (:func:`pimc_ray.models.flops_per_sample`; the index series
costs nothing, the patch encoder needs its 9 x 9 patch) and pixels per second of the whole embedding through
:class:`pimc_ray.mapping.embedder.WindowEmbedder` on this CPU (plots built per batch included), to compare with
1.5 x Presto's 1,539 px/s here.

    python benchmarks/learning_ablation.py --families base,level,hazy,small-fields --steps 400
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning_check import REGIMES, TILES, build_family, regimes, series_spec  # noqa: E402

from pimc_ray.data.catalogs import BANDS  # noqa: E402
from pimc_ray.data.series import INDEX_BAND_POSITIONS, read_series  # noqa: E402
from pimc_ray.data.tiles import OutputGrid  # noqa: E402
from pimc_ray.kernels.indices import vegetation_indices  # noqa: E402
from pimc_ray.kernels.patches import composite, patches_at  # noqa: E402

PAPER_SIZE = {"widths": [32, 64, 128], "blocks": 1, "embed_dim": 64}
SMALL = {"widths": [16, 32, 64], "blocks": 1, "embed_dim": 64}
#: Pretraining variants: name -> (RP encoder parameters, haze augmentation probability).
VARIANTS: dict[str, tuple[dict[str, Any], float]] = {
    "RP 32-64-128 (earlier size)": (PAPER_SIZE, 0.0),
    "RP 16-32-64": (SMALL, 0.0),
    "RP 16-32-64 + haze aug. 0.15": (SMALL, 0.15),
    "RP 16-32-64 + haze aug. 0.3": (SMALL, 0.3),
}
HALO = 4  # the RSI encoder's 9 x 9 patch


def read_tile(archive: Any, tile_id: str) -> dict[str, np.ndarray]:
    """Every pixel of a tile: ten-band series ``(P, 10, T)``, labels, 9 x 9 median patches, validity."""
    import shapely.geometry

    from pimc_ray.local.archive import label_raster, tile_info

    tile = tile_info(archive.spec, tile_id)
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    (window,) = grid.windows(tile.shape[0])
    grown = window.grown(HALO, grid.resolution)
    spec = series_spec(archive)
    values = read_series(
        archive.read_items("sentinel-2-l2a"), dataclasses.replace(spec, bands=BANDS), grid, grown
    )
    steps, h, w = values.values.shape[0], window.height, window.width
    H, W = grown.height, grown.width  # noqa: N806
    image = composite(values.values, "median", spec.grid_dates()).reshape(len(BANDS), H, W)
    own = values.values.reshape(steps, len(BANDS), H, W)[:, :, HALO : HALO + h, HALO : HALO + w]
    series = np.ascontiguousarray(own.reshape(steps, len(BANDS), -1).transpose(2, 1, 0))  # (P, 10, T)
    rows, cols = np.divmod(np.arange(h * w), w)
    patches = patches_at(image, rows, cols, 2 * HALO + 1)
    blue, red, nir = (series[:, i] for i in INDEX_BAND_POSITIONS)
    indices = vegetation_indices(blue, red, nir, axis=1)  # (P, 3, T)
    valid = (
        np.isfinite(series).all(axis=(1, 2))
        & np.isfinite(patches).all(axis=(1, 2, 3))
        & np.isfinite(indices).all(axis=(1, 2))
    )
    labels = label_raster(archive.spec, tile_id).reshape(-1)
    return {"series": series, "patches": patches, "indices": indices, "labels": labels, "valid": valid}


def pretrain(
    rp_params: dict[str, Any],
    series: np.ndarray,
    patches: np.ndarray,
    *,
    steps: int,
    seed: int,
    haze: float = 0.0,
) -> Any:
    """PIMC pretraining of a PIMCModel with ``rp_params`` on (series, patch) pairs, in this process."""
    import torch

    from pimc_ray.models.checkpoint import EncoderConfig
    from pimc_ray.models.pimc import PIMCConfig
    from pimc_ray.training.config import TrainConfig
    from pimc_ray.training.loop import haze_series, plots_from_series, shift_series

    config = TrainConfig(model=PIMCConfig(rp=EncoderConfig(params=rp_params), seed=seed), steps=max(1, steps))
    model = config.model.build().train()  # steps=0: the random initialisation, untrained
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    rgb = series[:, INDEX_BAND_POSITIONS]
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        pick = rng.choice(len(series), config.batch_size, replace=False)
        plots = plots_from_series(haze_series(shift_series(rgb[pick], config.time_shift, rng), haze, rng))
        loss = model(plots, torch.from_numpy(patches[pick]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def embed(model: Any, series: np.ndarray, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RP and patch embeddings of pixels."""
    import torch

    from pimc_ray.training.loop import plots_from_series

    rp, rsi = [], []
    with torch.inference_mode():
        for s in range(0, len(series), 2048):
            rp.append(model.rp(plots_from_series(series[s : s + 2048, INDEX_BAND_POSITIONS])).numpy())
            rsi.append(model.rsi(torch.from_numpy(patches[s : s + 2048])).numpy())
    return np.concatenate(rp), np.concatenate(rsi)


def cost(
    rp_params: dict[str, Any], steps: int, *, with_series: bool, with_patch: bool
) -> tuple[float, float]:
    """``(MFLOP per pixel, pixels per second)`` of an embedding through the mapping job's window code."""
    import datetime as dt

    import shapely.geometry
    import torch

    from pimc_ray.data.series import SeriesSpec, WindowSeries
    from pimc_ray.data.stac import DateRange
    from pimc_ray.data.timegrid import TimeGridSpec
    from pimc_ray.mapping.embedder import WindowEmbedder
    from pimc_ray.models import EncoderConfig, flops_per_sample
    from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS

    rp = {"name": "rp-resnet", "params": rp_params}
    parts = ([{"name": "index-series", "params": {"steps": steps}}] if with_series else []) + [rp]
    parts += [{"name": "rsi-cnn", "params": DEFAULT_RSI_PARAMS}] if with_patch else []
    config = EncoderConfig(name="pimc-concat", params={"parts": parts})
    model = config.build().eval()
    rp_tower = model.towers[1 if with_series else 0]
    mflop = flops_per_sample(rp_tower, (3, steps, steps)) / 1e6
    if with_patch:
        mflop += flops_per_sample(model.towers[-1], (len(BANDS), 9, 9)) / 1e6
    side, m = 128, int(model.halo)
    extent = (0.0, 0.0, side * 10.0, side * 10.0)
    grid = OutputGrid(32632, extent, 10.0, shapely.geometry.box(*extent))
    (window,) = grid.windows(side)
    grown = (side + 2 * m) ** 2
    rng = np.random.default_rng(0)
    values = rng.uniform(0.02, 0.5, (steps, len(BANDS) if with_patch else 3, grown)).astype(np.float32)
    none = np.array([], "datetime64[D]")
    ws = WindowSeries(values, np.full(grown, 9, np.uint16), none, none)
    years = steps // 36
    dates = DateRange(dt.date(2023 - years, 1, 1), dt.date(2022, 12, 31))
    spec = SeriesSpec(dates=dates, timegrid=TimeGridSpec(steps))
    embedder = WindowEmbedder(spec, model, batch_size=1024, threads=torch.get_num_threads())
    embedder.compute(grid, window, ws)  # warm-up
    t0 = time.perf_counter()
    embedder.compute(grid, window, ws)
    return mflop, window.pixels / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/learning-ablation"))
    p.add_argument("--families", default="base,level,hazy,small-fields")
    p.add_argument("--steps", type=int, default=400, help="pretraining steps of 256 pairs")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated pretraining variants")
    args = p.parse_args()
    chosen = {v.strip() for v in args.variants.split(",") if v.strip()}
    for name in [v for v in VARIANTS if v not in chosen]:
        del VARIANTS[name]

    import torch

    torch.set_num_threads(2)
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, fa: np.ndarray, ya: np.ndarray, fb: np.ndarray, yb: np.ndarray) -> None:
        for a, b in ((fa, fb), (fb, fa)):
            got = regimes(a, ya if a is fa else yb, b, yb if a is fa else ya, args.draws)
            for regime, acc in got.items():
                rows.setdefault(name, {}).setdefault(regime, []).append(acc)

    for family in args.families.split(","):
        t0 = time.perf_counter()
        archive = build_family(args.out / "archives", family, args.seed)
        a, b = (read_tile(archive, t) for t in TILES)
        ma, mb = a["valid"] & (a["labels"] > 0), b["valid"] & (b["labels"] > 0)
        ya, yb = a["labels"][ma], b["labels"][mb]
        raw_a, raw_b = a["indices"][ma].reshape(ma.sum(), -1), b["indices"][mb].reshape(mb.sum(), -1)
        add("raw index series", raw_a, ya, raw_b, yb)
        pool_series = np.concatenate([a["series"][a["valid"]], b["series"][b["valid"]]])
        pool_patches = np.concatenate([a["patches"][a["valid"]], b["patches"][b["valid"]]])
        for variant, (params, haze) in VARIANTS.items():
            model = pretrain(params, pool_series, pool_patches, steps=args.steps, seed=args.seed, haze=haze)
            (rp_a, rsi_a), (rp_b, rsi_b) = (
                embed(model, x["series"][m], x["patches"][m]) for x, m in ((a, ma), (b, mb))
            )
            add(f"{variant}", rp_a, ya, rp_b, yb)
            add(f"series + {variant}", np.c_[raw_a, rp_a], ya, np.c_[raw_b, rp_b], yb)
            add(f"series + {variant} + patch", np.c_[raw_a, rp_a, rsi_a], ya, np.c_[raw_b, rp_b, rsi_b], yb)
            random = pretrain(params, pool_series, pool_patches, steps=0, seed=args.seed)
            (zr_a, _), (zr_b, _) = (
                embed(random, x["series"][m], x["patches"][m]) for x, m in ((a, ma), (b, mb))
            )
            add(f"series + {variant}, random init", np.c_[raw_a, zr_a], ya, np.c_[raw_b, zr_b], yb)
        print(f"{family}: {time.perf_counter() - t0:.0f} s", flush=True)

    steps = series_spec(
        build_family(args.out / "archives", args.families.split(",")[0], args.seed)
    ).timegrid.steps
    costs = {}
    for variant, (params, _) in VARIANTS.items():
        costs[variant] = cost(params, steps, with_series=False, with_patch=False)
        costs[f"series + {variant}"] = cost(params, steps, with_series=True, with_patch=False)
        costs[f"series + {variant} + patch"] = cost(params, steps, with_series=True, with_patch=True)
    print(
        f"\n{args.families} (seed {args.seed}, {args.steps} steps): mean (worst) OA % over families and directions"
    )
    print("| features | MFLOP/px | px/s | " + " | ".join(REGIMES) + " |")
    print("|---|---:|---:|" + "---:|" * len(REGIMES))
    for name, by in rows.items():
        mflop, rate = costs.get(name.removesuffix(", random init"), (math.nan, math.nan))
        cells = [f"{100 * np.mean(by[r]):.1f} ({100 * np.min(by[r]):.1f})" for r in REGIMES]
        print(f"| {name} | {mflop:.1f} | {rate:,.0f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
