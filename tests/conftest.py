"""Shared test fixtures and the ``gpu`` marker's skip rule.

Tests marked ``@pytest.mark.gpu`` are skipped unless :func:`pimc_ray.xp.cupy_available` says CuPy imports and
a CUDA device is usable; they are never faked. ``xp`` runs a test once per array backend: NumPy always, CuPy
as a ``gpu`` case.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pimc_ray.xp import cupy_available, import_cupy


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where there is no usable CUDA device."""
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device (pimc_ray.xp.cupy_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[pytest.param("numpy"), pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array module of the backend under test (``numpy`` or ``cupy``)."""
    return np if request.param == "numpy" else import_cupy()


# --- Sample archive, local STAC API and local Ray head -------------------------------------------------------
# Session-scoped: built/started once, stopped after the last test that uses them. Heavy imports stay inside the
# fixtures so that the kernel tests also load on a GPU image without rasterio or Ray.


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The Earth-Search-style sample archive with 128-pixel tiles (:data:`tests.specs.TEST_SPEC`)."""
    from pimc_ray.testing.archive import build_archive
    from tests.specs import TEST_SPEC

    return build_archive(tmp_path_factory.mktemp("archive") / "es", TEST_SPEC)


@pytest.fixture(scope="session")
def stac_api(sample_archive: Any) -> Iterator[Any]:
    """A local STAC API (rustac serve) over the sample archive."""
    from pimc_ray.testing.stac_server import LocalStacServer

    with LocalStacServer(sample_archive.items_path) as server:
        yield server


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """A local Ray head (2 CPUs, loopback); yields the dashboard address that `ray job submit` uses."""
    from pimc_ray.testing.stac_server import free_port, wait_until_up

    temp_dir = Path(tempfile.mkdtemp(prefix="pimc-ray-", dir="/tmp"))  # short: Ray's sockets live below it
    dash, gcs = free_port(), free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    log = open(temp_dir / "ray-start.log", "wb")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_until_up(f"{address}/api/version", timeout=120, process=head)
        yield address
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
