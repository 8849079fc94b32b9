"""Array kernels: NumPy or CuPy, decided by the arrays they are given; no catalogs, no models.

- :mod:`~pimc_ray.kernels.xp`: the array namespace of an input (the only module that imports CuPy), host/device
  and torch hand-over;
- :mod:`~pimc_ray.kernels.indices`: NDVI, EVI, SAVI;
- :mod:`~pimc_ray.kernels.recurrence`: recurrence plots, and the encoder's batched input from reflectance;
- :mod:`~pimc_ray.kernels.gpu`: the fused CUDA kernel behind them on CuPy arrays;
- :mod:`~pimc_ray.kernels.patches`: composites and ``k x k`` image patches around pixels.

Importing this package imports NumPy only.
"""

from pimc_ray.kernels.indices import INDEX_NAMES, evi, ndvi, savi, vegetation_indices
from pimc_ray.kernels.patches import MEDIAN, check_composite, composite, patch_ok, patches_at
from pimc_ray.kernels.recurrence import recurrence_plot, rp_batch, rp_from_reflectance
from pimc_ray.kernels.xp import array_namespace, cupy_available, import_cupy, to_numpy, to_torch

__all__ = [
    "INDEX_NAMES",
    "MEDIAN",
    "array_namespace",
    "check_composite",
    "composite",
    "cupy_available",
    "evi",
    "import_cupy",
    "ndvi",
    "patch_ok",
    "patches_at",
    "recurrence_plot",
    "rp_batch",
    "rp_from_reflectance",
    "savi",
    "to_numpy",
    "to_torch",
    "vegetation_indices",
]
