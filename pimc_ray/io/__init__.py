"""Outputs: COGs, the rasters of an output unit, mosaics, STAC items, the run manifest.

- the store the outputs go to is :mod:`pimc_ray.storage` (the package's one storage layer; its store names are
  re-exported here);
- :mod:`~pimc_ray.io.cog`: the windowed, validated, atomic COG writer;
- :mod:`~pimc_ray.io.rasters`: raster products and the COG writers of one tile (or zone), published together;
- :mod:`~pimc_ray.io.mosaic`: mosaics over finished tiles, GDAL tile indexes (GTI) and VRTs;
- :mod:`~pimc_ray.io.stac_items`: STAC items of tiles and the run's collection;
- :mod:`~pimc_ray.io.manifest`: the run manifest, the jobs' one resume system.

I/O knows rasters, not models.
"""

from pimc_ray.io.cog import COGWriter, write_cog
from pimc_ray.io.manifest import RunManifest
from pimc_ray.io.mosaic import MosaicKind, build_gti, build_vrt, write_mosaics
from pimc_ray.io.rasters import RasterProduct, RasterSet
from pimc_ray.io.stac_items import output_collection, tile_item
from pimc_ray.storage import LocalStore, S3Store, Store, gdal_s3_env, normalize_location, open_store

__all__ = [
    "COGWriter",
    "LocalStore",
    "MosaicKind",
    "RasterProduct",
    "RasterSet",
    "RunManifest",
    "S3Store",
    "Store",
    "build_gti",
    "build_vrt",
    "gdal_s3_env",
    "normalize_location",
    "open_store",
    "output_collection",
    "tile_item",
    "write_cog",
    "write_mosaics",
]
