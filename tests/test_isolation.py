"""Jobs (and so the tests that run them) never join a Ray cluster they were not pointed at: with a user's cluster
as the latest one started on the machine (the file ``ray start`` leaves in ``$TMPDIR/ray/ray_current_cluster``,
which a bare ``ray.init()`` follows), the jobs' :func:`~pimc_ray.parallel.init_ray` starts its own Ray, and joins a
cluster only when ``RAY_ADDRESS`` names it (as ``ray job submit`` does)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pimc_ray.local.ray_cluster import LocalRayHead

BARE = "import ray; ray.init()"
JOBS = "from pimc_ray.parallel import init_ray; init_ray()"


@pytest.mark.slow
def test_a_job_does_not_join_a_users_cluster_unless_ray_address_names_it():
    with LocalRayHead(num_cpus=1) as users, tempfile.TemporaryDirectory(prefix="iso-", dir="/tmp") as tmp:
        (Path(tmp) / "ray").mkdir()
        (Path(tmp) / "ray" / "ray_current_cluster").write_text(users.gcs_address)  # as `ray start` leaves it

        def gcs_of(start: str, **env: str) -> str:
            """The GCS address the Ray started by ``start`` in a new process talks to."""
            full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"TMPDIR": tmp, **env}
            code = f"{start}; import ray; print(ray.get_runtime_context().gcs_address)"
            proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                                  timeout=180)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-2000:]
            return proc.stdout.strip().splitlines()[-1]

        assert gcs_of(BARE) == users.gcs_address  # the trap: a bare ray.init() joins the user's cluster
        assert gcs_of(JOBS) != users.gcs_address  # the jobs start their own
        assert gcs_of(JOBS, RAY_ADDRESS=users.gcs_address) == users.gcs_address  # and join the one named
