"""Embedding throughput: regular series -> plots -> encoder, against the encoder alone, in one process.

For ``--pixels`` pixels of regular-grid reflectance (T = 36 steps), measures per device:

* ``encoder only``: the RP encoder on precomputed (N, 3, T, T) plots already on the device;
* ``embed_series``: what a worker does per window after reading: indices, recurrence plots and the encoder
  (:meth:`pimc_ray.mapping.embedder.WindowEmbedder.embed_series`), including the host -> device copy of the series.

The ratio of the two says how much the plots cost on top of the encoder. Prints a markdown table.

    python benchmarks/bench_embed.py                 # CPU (threads = all cores)
    python benchmarks/bench_embed.py --device cuda   # adds the CUDA rows where a GPU exists
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.data.series import SeriesSpec  # noqa: E402
from pimc_ray.data.stac import DateRange  # noqa: E402
from pimc_ray.kernels.recurrence import rp_from_reflectance  # noqa: E402
from pimc_ray.mapping.embedder import WindowEmbedder  # noqa: E402
from pimc_ray.models import EncoderConfig, flops_per_sample  # noqa: E402


def best_of(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pixels", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", action="append", choices=["cpu", "cuda"], help="default: cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    devices = args.device or ["cpu"]

    steps = 36
    rng = np.random.default_rng(0)
    series = rng.uniform(0.01, 0.5, (steps, 3, args.pixels)).astype(np.float32)  # (T, band, P)
    spec = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
    config = EncoderConfig()
    mflop = flops_per_sample(config.build(), (3, steps, steps)) / 1e6
    by_pixel = series.transpose(2, 1, 0)
    plots_host = torch.from_numpy(rp_from_reflectance(by_pixel[:, 0], by_pixel[:, 1], by_pixel[:, 2]))

    print(
        f"encoder {config.name} {dict(config.params)}: {mflop:.1f} MFLOP/pixel; {args.pixels} pixels, T={steps}"
    )
    print("| device | encoder only (px/s) | embed_series (px/s) | ratio | encoder GFLOP/s |")
    print("|---|---|---|---|---|")
    for device in devices:
        if device == "cuda":
            name = torch.cuda.get_device_name(0)
            sync = torch.cuda.synchronize
        else:
            name = f"cpu x{torch.get_num_threads()}"
            sync = lambda: None  # noqa: E731
        embedder = WindowEmbedder(
            spec,
            config.build(),
            batch_size=args.batch_size,
            threads=torch.get_num_threads(),
            device=device,
        )
        plots = plots_host.to(device)

        def encoder_only(embedder=embedder, plots=plots):
            with torch.inference_mode():
                for s in range(0, len(plots), args.batch_size):
                    embedder.encoder(plots[s : s + args.batch_size])

        t_enc = best_of(encoder_only, args.repeats, sync)
        t_all = best_of(lambda embedder=embedder: embedder.embed_series(series), args.repeats, sync)
        px_enc, px_all = args.pixels / t_enc, args.pixels / t_all
        print(
            f"| {name} | {px_enc:,.0f} | {px_all:,.0f} | {px_all / px_enc:.2f} | {px_enc * mflop / 1e3:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
