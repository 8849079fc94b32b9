"""Mapping: an area's tiles mapped and published whole by worker actors, and the indices job.

- :mod:`~pimc_ray.mapping.requests`: what a run asks for (:class:`AreaRequest`, :class:`MapRequest`) and its key;
- :mod:`~pimc_ray.mapping.runner`: :func:`run_groups` (whole tiles on worker actors, or this process),
  :func:`run_windows` (window results back to the caller) and :class:`Parallelism`;
- :mod:`~pimc_ray.mapping.embedder`: :class:`WindowEmbedder`, one window's series to embeddings;
- :mod:`~pimc_ray.mapping.heads`: :func:`fit_head` (the one head-fitting path) and :func:`classify`;
- :mod:`~pimc_ray.mapping.forecast`: :func:`fit_forecaster` (a forecast head, fit on what followed the run's
  dates) and :func:`forecast`;
- :mod:`~pimc_ray.mapping.maps`: :func:`map_aoi` and :func:`dry_run`, the mapping jobs;
- :mod:`~pimc_ray.mapping.indices`: :func:`export_indices`, the indices job.

Names load on first use, so a process that needs only the runner does not import torch.
"""

from pimc_ray._exports import lazy_exports

_API = {
    "AreaRequest": "pimc_ray.mapping.requests",
    "MapRequest": "pimc_ray.mapping.requests",
    "Parallelism": "pimc_ray.mapping.runner",
    "WindowFailure": "pimc_ray.mapping.runner",
    "run_groups": "pimc_ray.mapping.runner",
    "run_windows": "pimc_ray.mapping.runner",
    "EmbedderFactory": "pimc_ray.mapping.embedder",
    "WindowEmbedder": "pimc_ray.mapping.embedder",
    "WindowResult": "pimc_ray.mapping.embedder",
    "series_reader": "pimc_ray.mapping.embedder",
    "classify": "pimc_ray.mapping.heads",
    "fit_head": "pimc_ray.mapping.heads",
    "ForecastReader": "pimc_ray.mapping.forecast",
    "fit_forecaster": "pimc_ray.mapping.forecast",
    "forecast": "pimc_ray.mapping.forecast",
    "MapSummary": "pimc_ray.mapping.maps",
    "dry_run": "pimc_ray.mapping.maps",
    "map_aoi": "pimc_ray.mapping.maps",
    "IndicesSummary": "pimc_ray.mapping.indices",
    "export_indices": "pimc_ray.mapping.indices",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
