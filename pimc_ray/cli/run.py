"""The one job runner: process set-up, one line per error, and the documented exit codes.

Every job (``jobs/*.py``, ``pimc <command>``) parses its arguments, then hands its body to :func:`run_job`. A
:class:`~pimc_ray.errors.PimcError` becomes one line on stderr (``error: ...``) and its class's exit code
(:data:`~pimc_ray.errors.EXIT_BAD_INPUT`, :data:`~pimc_ray.errors.EXIT_TILES_FAILED` or
:data:`~pimc_ray.errors.EXIT_INTERNAL`); anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from pimc_ray.errors import EXIT_OK, PimcError
from pimc_ray.parallel import bound_memory

__all__ = ["run_job", "say"]


def say(message: str) -> None:
    """A job's progress line, on stdout right away."""
    print(message, flush=True)


def run_job(work: Callable[[], int | None]) -> int:
    """Run a job body in this process; returns the exit code.

    Sets the process up as the jobs need it (bounded GDAL cache and heap before any raster is read; warnings and
    errors of the library logged, retries of HTTP clients not), then runs ``work``. Its return value (None for
    success) is the exit code.
    """
    bound_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are expected; failures surface as errors
    logging.getLogger("botocore").setLevel(logging.ERROR)
    try:
        code = work()
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    return EXIT_OK if code is None else code
