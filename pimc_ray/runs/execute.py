"""Executing a run spec: what ``pimc run execute SPEC`` (and so a scheduled RayJob) does.

:func:`execute_run`:

1. plans it (:func:`~pimc_ray.runs.plan.plan_run`: a region outside Sentinel-2's coverage or a period without
   acquisitions is refused) and refuses it over its budget;
2. checks the run (:func:`~pimc_ray.mapping.maps.prepare_run`): the items of the period (none: refused), the model
   (missing or corrupt: refused), and the output (new, or holding this spec's run; another spec's run, area,
   tile size or products: refused). Every refusal is one line and exit code 2, with nothing written; then
   ``plan.json`` and ``plan_tiles.geojson`` are written to the output;
3. maps it in place on the Ray cluster it runs in (the scale-out path: workers publish whole tiles), as a rerun
   that maps only tiles whose inputs changed (:mod:`pimc_ray.mapping.updates`): the first run maps every tile, a
   killed run resumes, a later run of the same spec remaps the tiles with new or reprocessed acquisitions, or
   everything after a change of model or parameters;
4. keeps the status layer (:class:`~pimc_ray.runs.status.StatusLayer`: ``status.geojson``, ``status.png``) beside
   the run's collection while tiles come back.

The spec's products ``embedding`` and ``classes`` are mapped per tile; ``indices`` (whole UTM zones, not tiles) is
not part of a tile run and is refused here: run ``pimc indices`` with the command line ``pimc run validate``
prints.
"""

from __future__ import annotations

import datetime as dt
import logging

from pimc_ray.errors import AllCloudError, InvalidConfigError
from pimc_ray.mapping.maps import MapSummary, prepare_run
from pimc_ray.mapping.requests import MapRequest
from pimc_ray.progress import Progress
from pimc_ray.runs.plan import DEFAULT_SAMPLE_TILES, PLAN_FILE, TILES_FILE, Prices, plan_run, write_plan
from pimc_ray.runs.spec import RunSpec
from pimc_ray.runs.status import STATUS_GEOJSON, STATUS_PNG, StatusLayer

__all__ = ["execute_run"]

logger = logging.getLogger(__name__)


def execute_run(
    spec: RunSpec,
    request: MapRequest,
    *,
    today: dt.date | None = None,
    prices: Prices | None = None,
    count_items: bool = True,
    sample_tiles: int = DEFAULT_SAMPLE_TILES,
    status_interval: float = 30.0,
    progress: Progress = logger.info,
) -> MapSummary:
    """Plan, check and map ``spec`` (see the module docstring).

    Args:
        spec: the run spec.
        request: its mapping request, as the spec's command line gives it (:meth:`RunSpec.to_args`, with
            ``update``: the cli builds it, so that a spec and the job's options can never disagree).
        today: resolves a rolling period.
        prices, count_items, sample_tiles: as :func:`~pimc_ray.runs.plan.plan_run` takes them.
        status_interval: seconds between rewrites of the status layer.

    Raises:
        InvalidConfigError: the spec asks for indices, its request is not a rerun in place, or its plan is over
            its budget; nothing is written.
        NoItemsFoundError, CatalogUnreachableError, CheckpointError, OutputExistsError, StorageError: before
            anything is written.
        TilesFailedError: after every tile that could be mapped is published.
    """
    if spec.products.indices:
        raise InvalidConfigError(
            "spec.products.indices: pimc run execute maps tiles (embedding, classes), and the indices product "
            "writes whole UTM zones; set it to false here and run `pimc indices` with the command line that "
            "`pimc run validate` prints"
        )
    if not request.update:
        raise InvalidConfigError(
            "a run spec executes as a rerun in place: build its request with update=True"
        )
    plan = plan_run(
        spec,
        today=today,
        prices=prices,
        count_items=count_items,
        sample_tiles=sample_tiles,
        progress=progress,
    )
    progress(plan.summary())
    plan.check_budget(spec.budget)  # over it: one line, exit 2, nothing written
    run = prepare_run(request)  # items, model, output: checked, nothing written
    for uri in write_plan(plan, spec.output):
        progress(f"wrote {uri}")
    layer = StatusLayer(run.store, interval=status_interval)
    try:
        summary = run.map(progress=progress, monitor=layer)
    except AllCloudError:  # the map kept nothing: neither do the plan and the status layer of a new output
        if run.before is None:
            for key in (PLAN_FILE, TILES_FILE, STATUS_GEOJSON, STATUS_PNG):
                run.store.delete(key)
        raise
    progress(f"status layer: {run.store.uri('status.geojson')} {layer.counts()}")
    return summary
