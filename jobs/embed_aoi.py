"""Ray job: map an area of interest to embedding and classification COGs.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/embed_aoi.py \
        --aoi 11.93,45.50,11.96,45.52 --start 2022-01-01 --end 2022-12-31 \
        --stac-url http://127.0.0.1:7822 --out out/demo --head-train-aoi 12.01,45.49,12.04,45.51

`python jobs/embed_aoi.py --help` lists every option. Exit codes: 0 success (or nothing to do), 2 bad input
or a data problem (one line on stderr naming the fix; nothing written).
"""

import sys

from pimc_ray.entrypoints import embed_main

if __name__ == "__main__":
    sys.exit(embed_main())
