"""Ray job: map an area of interest to embedding and classification COGs.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/embed_aoi.py \
        --aoi 11.93,45.50,11.96,45.52 --start 2022-01-01 --end 2022-12-31 \
        --stac-url http://127.0.0.1:7822 --out out/demo --head-train-aoi 12.01,45.49,12.04,45.51

Output to a folder or s3://bucket/prefix, one set of COGs per tile, STAC items, and per product and UTM zone a
mosaic: a GDAL raster tile index (mosaic_<product>_epsg<zone>.gti.gpkg, GDAL >= 3.9), plus a VRT
(mosaic_<product>_epsg<zone>.vrt) for zones of up to 64 tiles. Rerunning resumes (finished tiles are skipped).
`--dry-run` plans without writing. `python jobs/embed_aoi.py --help` lists every option. Exit codes: see `--help`
(0 success; 2 bad input, one line on stderr, nothing written; 3 some tiles failed; 4 internal error).
"""

from pimc_ray.cli.jobs import embed_main

if __name__ == "__main__":
    raise SystemExit(embed_main())
