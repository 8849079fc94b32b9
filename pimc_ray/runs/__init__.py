"""Runs: what a whole (scheduled, continental) run does, written once as a YAML run spec.

- :mod:`~pimc_ray.runs.spec`: :class:`RunSpec` (region, period, catalog, model, products, output, tiles,
  resources, budget), validated with one-line errors, loaded from a path or URI, written to and read from the
  mapping jobs' command lines, and :func:`describe`;
- :mod:`~pimc_ray.runs.regions`: named regions (Natural Earth countries and continents, vendored) and areas;
- :mod:`~pimc_ray.runs.plan`: :func:`plan_run` (tiles, km², pixels, items, bytes, CPU/GPU-hours, cost) and its
  :class:`Plan`, which refuses a run over its budget; :func:`write_plan` (``plan.json``, ``plan_tiles.geojson``);
- :mod:`~pimc_ray.runs.execute`: :func:`execute_run`, plan then map a spec in place (``pimc run execute``);
- :mod:`~pimc_ray.runs.status`: :class:`StatusLayer`, the run's live ``status.geojson`` and ``status.png``.

The top library layer: runs may import every layer below it; only cli/ imports runs. Importing this package
imports pydantic, PyYAML, shapely and pyproj, not torch or Ray (:mod:`~pimc_ray.runs.execute` imports the mapping
layer, and with it torch: import it where a run executes).
"""

from pimc_ray.runs.plan import Plan, Prices, Throughput, plan_run, write_plan
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
from pimc_ray.runs.status import StatusLayer

__all__ = [
    "Budget",
    "Catalog",
    "Classes",
    "Period",
    "Plan",
    "Prices",
    "Products",
    "Region",
    "Resources",
    "RunSpec",
    "Series",
    "StatusLayer",
    "Throughput",
    "area_km2",
    "describe",
    "plan_run",
    "region_geometry",
    "region_names",
    "write_plan",
]
