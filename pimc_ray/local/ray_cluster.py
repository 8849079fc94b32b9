"""A local Ray head on loopback for the demo and the tests, and a readiness check for job submission.

``ray start --head --block`` keeps the launcher in the foreground; terminating it stops every process it started,
so several heads (a test run beside ``make demo``) can live on one machine without ``ray stop``, which would
stop them all.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pimc_ray.errors import PimcError
from pimc_ray.local._service import LocalService, free_port, wait_until_up

__all__ = [
    "LOOPBACK_ENV",
    "wait_for_job_agent",
    "LocalRayHead",
]

logger = logging.getLogger(__name__)

#: Ray settings for a cluster that lives on 127.0.0.1 only: no telemetry, no cluster-wide token (Ray 2.60 turns
#: token authentication on as soon as ~/.ray/auth_token exists, and the dashboard then refuses plain requests).
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def wait_for_job_agent(address: str, *, timeout: float = 120.0) -> None:
    """Block until the cluster at ``address`` (dashboard URL) accepts and runs a job.

    The dashboard answers before its job agent has registered ("No available agent to submit job"), so a
    no-op job is submitted until one succeeds.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = JobSubmissionClient(address)
            job = client.submit_job(entrypoint="true")
            while client.get_job_status(job) not in {
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
                JobStatus.STOPPED,
            }:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            return
        except (RuntimeError, ConnectionError) as err:
            last_error = err
            time.sleep(1.0)
    raise PimcError(f"the Ray head at {address} did not accept jobs within {timeout:.0f} s ({last_error})")


class LocalRayHead(LocalService):
    """A Ray head with ``num_cpus`` CPUs on 127.0.0.1, started on entering the context and stopped on exit.

    Ray's temporary folder is a new short folder under /tmp (its unix sockets must stay under 107 characters)
    and is removed afterwards.
    """

    def __init__(self, *, num_cpus: int = 2, env: dict[str, str] | None = None) -> None:
        self.num_cpus = num_cpus
        self.env = dict(env or {})  # e.g. S3 endpoint and credentials, inherited by jobs and workers
        self.dashboard_port = free_port()
        self.gcs_port = free_port()
        self.temp_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The dashboard URL, what ``ray job submit --address`` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> LocalRayHead:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="pimc-ray-", dir="/tmp"))
        env = {
            **os.environ,
            **self.env,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        ray_cli = str(Path(sys.executable).parent / "ray")
        with open(self.temp_dir / "ray-start.log", "wb") as log:
            self.process = subprocess.Popen(
                [
                    ray_cli,
                    "start",
                    "--head",
                    "--block",
                    f"--num-cpus={self.num_cpus}",
                    f"--port={self.gcs_port}",
                    "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}",
                    f"--temp-dir={self.temp_dir}",
                    "--disable-usage-stats",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_up(f"{self.address}/api/version", timeout=120, process=self.process)
            wait_for_job_agent(self.address)
        except BaseException:
            self.stop()
            raise
        logger.info("local Ray head up, dashboard %s", self.address)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # `ray start --block` stops every process it started
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
