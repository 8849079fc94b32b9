"""Should a forecast head choose its features (the default embedding or the raw index series) by validation on
its own training area? One-off check behind docs/learning-check.md, "Forecast".

For each family and seed of the learning check's forecast part (its archives, exports, context grid and pixels:
``learning_check.forecast_spec``, ``default_encoder``, ``forecast_features``), and each direction: both heads are
fit on one half of the training tile's pixels (its top and bottom rows, 64 each) and scored on the other, both
ways; the choice is the lower mean validation RMSE. Printed beside it: both heads fit on the whole training tile
and scored on the other tile (what the check reports), and the mean test RMSE of always-embedding,
always-raw-series and chosen-by-validation::

    python benchmarks/forecast_feature_choice.py --families "two-years,held-out: mosaic,base,hazy"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import learning_check as lc  # noqa: E402

from pimc_ray.data.timegrid import step_days  # noqa: E402
from pimc_ray.mapping.forecast import last_positions  # noqa: E402
from pimc_ray.models.heads import LinearForecaster  # noqa: E402


def _rmse(train: dict, name: str, fit: np.ndarray, test: tuple, grid: tuple) -> float:
    """RMSE on ``test`` (x, y) of a forecast head fit on the ``fit`` pixels of ``train``'s ``name`` features;
    ``grid``: the head's ``(last, steps, step_days)``."""
    x, y = test
    head = LinearForecaster(x.shape[1], lc.HORIZON, *grid).fit(train[name][fit], train["future"][fit])
    return float(np.sqrt(np.mean((head.predict(x) - y) ** 2)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/learning-check"))
    p.add_argument("--families", default="two-years,held-out: mosaic,base,hazy")
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    test = {"embedding": [], "raw": [], "chosen": []}
    for family in args.families.split(","):
        for seed in range(args.seeds):
            export = args.out / "runs" / f"{family.replace(': ', '-')}-{seed}" / "encoder"
            archive = lc.build_family(args.out / "archives", family, seed)
            spec = lc.forecast_spec(archive)
            encoder, _, composite = lc.default_encoder(export, spec.timegrid.steps)
            steps = spec.timegrid.steps
            last = {
                "embedding": last_positions(encoder, spec),
                "raw": [steps - 1, 2 * steps - 1, 3 * steps - 1],
            }
            days = step_days(spec.dates.start, spec.dates.end, steps)
            tiles = [
                lc.forecast_features(archive, t, spec, encoder, composite, pixels=20_000, seed=seed)
                for t in lc.TILES
            ]

            for a, b in ((0, 1), (1, 0)):
                train, other = tiles[a], tiles[b]
                top = np.arange(len(train["future"])) < len(train["future"]) // 2  # pixels come row by row
                everything = np.ones_like(top)
                valid, scores = {}, {}
                for name in ("embedding", "raw"):
                    grid = (last[name], steps, days)
                    valid[name] = np.mean([_rmse(train, name, half, (train[name][~half], train["future"][~half]), grid)
                                           for half in (top, ~top)])  # fmt: skip
                    scores[name] = _rmse(train, name, everything, (other[name], other["future"]), grid)
                chosen = min(valid, key=valid.__getitem__)
                for name in ("embedding", "raw"):
                    test[name].append(scores[name])
                test["chosen"].append(scores[chosen])
                print(
                    f"{family}-{seed} {lc.TILES[a]}->{lc.TILES[b]}: validation embedding {valid['embedding']:.4f} "
                    f"raw {valid['raw']:.4f} -> {chosen}; test embedding {scores['embedding']:.4f} "
                    f"raw {scores['raw']:.4f}",
                    flush=True,
                )
    print(", ".join(f"mean test RMSE {k}: {np.mean(v):.4f}" for k, v in test.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
