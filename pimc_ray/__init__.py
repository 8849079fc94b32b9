"""pimc-ray: region-wide self-supervised embedding and land-cover maps from Sentinel-2 archives with PIMC, on Ray.

Importing the package is cheap (no Ray, torch or CuPy). The main entry points:

- :func:`pimc_ray.aoi.load_aoi`, :func:`pimc_ray.stac.search_items`, :func:`pimc_ray.stack.stack_reflectance`:
  AOI, catalog search, reflectance stacks;
- :func:`pimc_ray.indices.vegetation_indices`, :func:`pimc_ray.recurrence.rp_from_reflectance`: the kernels;
- :func:`pimc_ray.pipeline.map_aoi`, :func:`pimc_ray.export.export_indices`: the jobs, as library calls.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pimc-ray")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
