"""Ray job: fit a classification head on frozen embeddings of labelled pixels, saved beside the encoder.

    python jobs/train_head.py --checkpoint data/models/pimc-demo --labels fields.geojson --class-property crop \
        --start 2022-01-01 --end 2022-12-31 --stac-url http://127.0.0.1:7822
    python jobs/train_head.py --checkpoint data/models/pimc-demo --labels-collection pimc-sample-labels \
        --aoi "$(pimc archive bbox --train)" --start 2022-01-01 --end 2022-12-31 --stac-url http://127.0.0.1:7822

The head lands in ``CHECKPOINT/head`` (or ``--out``); map with it through ``jobs/embed_aoi.py --checkpoint
CHECKPOINT --head CHECKPOINT/head``. Exit codes: see `--help` (0 success; 2 bad input, one line on stderr,
nothing written; 3 some tiles failed; 4 internal error).
"""

from pimc_ray.cli.jobs import train_head_main

if __name__ == "__main__":
    raise SystemExit(train_head_main())
