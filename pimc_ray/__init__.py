"""pimc-ray: region-wide self-supervised embedding and land-cover maps from Sentinel-2 archives with PIMC, on Ray.

Subpackages by stage, each importing only those below it (``tests/test_layers.py`` checks it)::

    errors, progress, parallel   exceptions and exit codes; progress lines; the Ray Data stage pattern, memory
    storage      every path a URI: local, file:// and s3:// (through obstore), for every layer above
    kernels/     NumPy or CuPy arrays: indices, recurrence plots, the fused GPU kernel, image patches
    data/        AOIs, STAC search and snapshots, catalog conventions, stacks, time grid, series, tiles, labels
    models/      encoders, projection heads, losses, classification heads, checkpoints (torch; no catalogs)
    io/          storage over URIs, COG writer, rasters of an output unit, mosaics, STAC items, run manifest
    training/    pretraining pairs, the Ray Train loop and driver, resume, export
    mapping/     requests, the window runner, per-window embedding, heads, the mapping and indices jobs
    evaluation/  the paper's downstream tasks (PASTIS forecast and classification, EuroSAT): loaders,
                 probes, fine-tuning, reports beside the paper's figures
    cli/         the jobs' arguments, the job runner and its exit codes, the ``pimc`` command
    local/       the sample archive and local STAC/S3/Ray services (the ``local`` extra; only cli imports it)

Importing the package is cheap (no Ray, torch or CuPy). The names below are loaded from their subpackage on
first use: ``pimc_ray.map_aoi`` is :func:`pimc_ray.mapping.maps.map_aoi`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pimc_ray._exports import lazy_exports

try:
    __version__ = version("pimc-ray")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

#: The public API: name -> the module that defines it.
_API = {
    "AOI": "pimc_ray.data.aoi",
    "load_aoi": "pimc_ray.data.aoi",
    "DateRange": "pimc_ray.data.stac",
    "search_items": "pimc_ray.data.stac",
    "stack_reflectance": "pimc_ray.data.stack",
    "SeriesSpec": "pimc_ray.data.series",
    "read_series": "pimc_ray.data.series",
    "TileGrid": "pimc_ray.data.tiles",
    "vegetation_indices": "pimc_ray.kernels.indices",
    "rp_from_reflectance": "pimc_ray.kernels.recurrence",
    "EncoderConfig": "pimc_ray.models.checkpoint",
    "EncoderRef": "pimc_ray.models.checkpoint",
    "AreaRequest": "pimc_ray.mapping.requests",
    "MapRequest": "pimc_ray.mapping.requests",
    "Parallelism": "pimc_ray.mapping.runner",
    "WindowEmbedder": "pimc_ray.mapping.embedder",
    "map_aoi": "pimc_ray.mapping.maps",
    "export_indices": "pimc_ray.mapping.indices",
    "fit_head": "pimc_ray.mapping.heads",
    "fit_forecaster": "pimc_ray.mapping.forecast",
    "pretrain": "pimc_ray.training.trainer",
    "PimcError": "pimc_ray.errors",
}

__all__ = ["__version__", *sorted(_API)]
__getattr__, __dir__ = lazy_exports(__name__, _API)
