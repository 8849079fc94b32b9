"""Runs: what a whole (scheduled, continental) run does, written once as a YAML run spec.

- :mod:`~pimc_ray.runs.spec`: :class:`RunSpec` (region, period, catalog, model, products, output, tiles,
  resources, budget), validated with one-line errors, loaded from a path or URI, written to and read from the
  mapping jobs' command lines, and :func:`describe`;
- :mod:`~pimc_ray.runs.regions`: named regions (Natural Earth countries and continents, vendored) and areas.

The top library layer: runs may import every layer below it; only cli/ imports runs. Importing this package
imports pydantic, PyYAML, shapely and pyproj, not torch or Ray.
"""

from pimc_ray.runs.regions import area_km2, region_geometry, region_names
from pimc_ray.runs.spec import (
    Budget,
    Catalog,
    Classes,
    Period,
    Products,
    Region,
    Resources,
    RunSpec,
    Series,
    describe,
)

__all__ = [
    "Budget",
    "Catalog",
    "Classes",
    "Period",
    "Products",
    "Region",
    "Resources",
    "RunSpec",
    "Series",
    "area_km2",
    "describe",
    "region_geometry",
    "region_names",
]
