"""Shared test fixtures and the ``gpu`` marker's skip rule.

Tests marked ``@pytest.mark.gpu`` are skipped unless :func:`pimc_ray.kernels.xp.cupy_available` says CuPy imports and
a CUDA device is usable; they are never faked. ``xp`` runs a test once per array backend: NumPy always, CuPy
as a ``gpu`` case.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pimc_ray.kernels.xp import cupy_available, import_cupy


def pytest_configure(config: pytest.Config) -> None:
    """Ray clients started by the tests (``ray job submit``) talk to loopback clusters without a token."""
    import os

    from pimc_ray.local.ray_cluster import LOOPBACK_ENV

    for name, value in LOOPBACK_ENV.items():
        os.environ.setdefault(name, value)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where there is no usable CUDA device."""
    if cupy_available():
        return
    skip = pytest.mark.skip(
        reason="needs CuPy and a CUDA device (pimc_ray.kernels.xp.cupy_available() is False)"
    )
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
    from pimc_ray.local.archive import build_archive
    from tests.specs import TEST_SPEC

    return build_archive(tmp_path_factory.mktemp("archive") / "es", TEST_SPEC)


@pytest.fixture(scope="session")
def series_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised checkpoint of the default export's shape (:data:`tests.specs.SERIES_RP_ENCODER`)."""
    from pimc_ray.models import EncoderConfig, save_checkpoint
    from tests.specs import SERIES_RP_ENCODER

    config = EncoderConfig.from_dict({**SERIES_RP_ENCODER, "seed": 3})
    return save_checkpoint(tmp_path_factory.mktemp("models") / "series-rp", config.build(), config)


@pytest.fixture(scope="session")
def stac_api(sample_archive: Any) -> Iterator[Any]:
    """A local STAC API (rustac serve) over the sample archive."""
    from pimc_ray.local.stac_server import LocalStacServer

    with LocalStacServer(sample_archive.items_path) as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A local S3-compatible store (SeaweedFS) with the bucket ``pimc-test``; its variables set for this process."""
    from pimc_ray.local.s3_server import LocalS3Server

    with LocalS3Server(("pimc-test",)) as server, pytest.MonkeyPatch.context() as mp:
        for name, value in server.env().items():
            mp.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def ray_head(s3: Any) -> Iterator[str]:
    """A local Ray head (2 CPUs, loopback) whose jobs see the local S3; yields the dashboard address.

    Per module, not per session: the multi-node cluster of tests/mapping/test_multinode.py cannot start its job
    agent while another Ray cluster runs on the machine (its dashboard answers "No available agent")."""
    from pimc_ray.local.ray_cluster import LocalRayHead

    with LocalRayHead(num_cpus=2, env=s3.env()) as head:
        yield head.address


@pytest.fixture(scope="module")
def local_ray():
    """An in-process Ray with 2 CPUs on loopback and its own short temporary folder, shut down afterwards."""
    import ray

    temp = tempfile.mkdtemp(prefix="pr-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
