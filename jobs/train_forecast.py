"""Ray job: fit a forecast head (the next NDVI/EVI/SAVI steps) on frozen embeddings, saved beside the encoder.

    python jobs/train_forecast.py --checkpoint data/models/pimc-demo --aoi "$(pimc archive bbox --train)" \
        --start 2022-01-01 --end 2022-10-12 --horizon 10 --stac-url http://127.0.0.1:7822

The targets are the indices the archive observed after --end (no labels). The head lands in
``CHECKPOINT/forecast`` (or ``--out``); map with it through ``jobs/embed_aoi.py --checkpoint CHECKPOINT
--forecast-head CHECKPOINT/forecast`` on a grid of the same steps. Exit codes: see `--help` (0 success; 2 bad
input, one line on stderr, nothing written; 4 internal error).
"""

from pimc_ray.cli.jobs import train_forecast_main

if __name__ == "__main__":
    raise SystemExit(train_forecast_main())
