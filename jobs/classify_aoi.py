"""Ray job: map an area of interest to land-cover class COGs (class id + confidence) on a tile grid.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/classify_aoi.py \
        --aoi 11.93,45.50,11.96,45.52 --start 2022-01-01 --end 2022-12-31 \
        --stac-url http://127.0.0.1:7822 --head models/head --out s3://maps/classes

Also `pimc classify ...`. Needs --head (a saved head) or --head-train-aoi (fit one on labels). Output to a
folder or s3://bucket/prefix; rerunning resumes. Exit codes: see `--help` (0 success; 2 bad input, one line on
stderr, nothing written; 3 some tiles failed; 4 internal error).
"""

from pimc_ray.cli.jobs import classify_main

if __name__ == "__main__":
    raise SystemExit(classify_main())
