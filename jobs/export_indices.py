"""Ray job: regular-grid NDVI, EVI and SAVI series of an area of interest as COGs, plus QA.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/export_indices.py \
        --aoi 11.93,45.50,11.96,45.52 --start 2022-01-01 --end 2022-12-31 \
        --stac-url http://127.0.0.1:7822 --out out/indices

Also `pimc indices ...`. `python jobs/export_indices.py --help` lists every option. Exit codes: see `--help`
(0 success; 2 bad input, one line on stderr, nothing written; 3 some tiles failed; 4 internal error).
"""

from pimc_ray.cli.jobs import indices_main

if __name__ == "__main__":
    raise SystemExit(indices_main())
