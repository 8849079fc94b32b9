"""Does bf16 autocast cost the default embedding anything? The learning check's probes and forecast, float32
against bfloat16 (``--precision bfloat16`` of the mapping jobs), on the check's archives and exports.

For each family and seed whose export exists (``learning_check.default_encoder``), both tiles are embedded twice
by :class:`~pimc_ray.mapping.embedder.WindowEmbedder`, in float32 and under bf16 autocast, and scored as the check
scores them: the linear probe fit on one tile and tested on the other (all labels, and 1, 5 and 20 per class over
``--draws`` draws), and the forecast head's RMSE over the next 10 steps (the check's forecast part). Reported per
family: the mean over seeds and directions of each precision, and the largest per-run change from float32 to
bfloat16. It reuses the exports and never pretrains::

    python benchmarks/bf16_check.py --out out/learning-check [--families base,hazy] [--seeds 2] [--draws 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import learning_check as lc  # noqa: E402

from pimc_ray.mapping.forecast import last_positions  # noqa: E402

PRECISIONS = ("float32", "bfloat16")


def run(root: Path, family: str, seed: int, draws: int) -> dict | None:
    """One family and seed: probe accuracies and forecast RMSE of the default embedding in both precisions."""
    export = root / "runs" / f"{family.replace(': ', '-')}-{seed}" / "encoder"
    if not (export / "config.json").exists():
        print(f"    no export at {export}: skipped", flush=True)
        return None
    archive = lc.build_family(root / "archives", family, seed)
    default, _, composite = lc.default_encoder(export, lc.series_spec(archive).timegrid.steps)
    spec = lc.forecast_spec(archive)
    encoder, _, _ = lc.default_encoder(export, spec.timegrid.steps)
    last = last_positions(encoder, spec)
    out: dict = {"family": family, "seed": seed}
    for precision in PRECISIONS:
        t0 = time.perf_counter()
        (y_a, f_a), (y_b, f_b) = (
            lc.tile_features(archive, t, {"default": default}, precision=precision) for t in lc.TILES
        )
        probes = [lc.regimes(f_a["default"], y_a, f_b["default"], y_b, draws),
                  lc.regimes(f_b["default"], y_b, f_a["default"], y_a, draws)]  # fmt: skip
        a, b = (
            lc.forecast_features(
                archive, t, spec, encoder, composite, pixels=20_000, seed=seed, precision=precision
            )
            for t in lc.TILES
        )
        rmse = [
            lc.forecast_rmse(a, b, spec, last)[lc.DEFAULT],
            lc.forecast_rmse(b, a, spec, last)[lc.DEFAULT],
        ]
        out[precision] = {
            "accuracy": {r: float(np.mean([p[r] for p in probes])) for r in lc.REGIMES},
            "rmse": {i: float(np.mean([d[i] for d in rmse])) for i in rmse[0]},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"  {family}-{seed} {precision}: {json.dumps(out[precision])}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/learning-check"))
    p.add_argument("--families", default=",".join(lc.FAMILIES))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args()
    runs = [
        r
        for f in args.families.split(",")
        for s in range(args.seeds)
        if (r := run(args.out, f, s, args.draws))
    ]
    (args.out / "bf16.json").write_text(json.dumps(runs, indent=1))
    print("| family | precision | " + " | ".join(f"OA {r}" for r in lc.REGIMES) + " | NDVI | EVI | SAVI |")
    print("|---|---|" + "---:|" * (len(lc.REGIMES) + 3))
    for family in dict.fromkeys(r["family"] for r in runs):
        mine = [r for r in runs if r["family"] == family]
        for precision in PRECISIONS:
            acc = [100 * np.mean([r[precision]["accuracy"][k] for r in mine]) for k in lc.REGIMES]
            err = [np.mean([r[precision]["rmse"][i] for r in mine]) for i in ("NDVI", "EVI", "SAVI")]
            cells = [f"{v:.1f}" for v in acc] + [f"{v:.4f}" for v in err]
            print(f"| {family} | {precision} | " + " | ".join(cells) + " |")
    worst_acc = max(
        abs(r["bfloat16"]["accuracy"][k] - r["float32"]["accuracy"][k]) for r in runs for k in lc.REGIMES
    )
    worst_rmse = max(
        abs(r["bfloat16"]["rmse"][i] - r["float32"]["rmse"][i]) for r in runs for i in r["float32"]["rmse"]
    )
    print(f"largest change per run: {100 * worst_acc:.2f} points of accuracy, {worst_rmse:.4f} of RMSE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
