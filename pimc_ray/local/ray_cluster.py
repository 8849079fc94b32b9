"""A local Ray head on loopback for the demo and the tests, a multi-node cluster on one machine, and a readiness
check for job submission.

``ray start --head --block`` keeps the launcher in the foreground; terminating it stops every process it started,
so several heads (a test run beside ``make demo``) can live on one machine without ``ray stop``, which would
stop them all. :class:`LocalRayCluster` adds worker nodes the same way (``ray start --address=... --block``),
each with its own Ray temporary folder, working directory and ``TMPDIR``, so that nothing but the network and
the object store is shared between nodes, as on a real cluster.
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
from dataclasses import dataclass
from pathlib import Path

from pimc_ray.errors import PimcError
from pimc_ray.local._service import LocalService, free_port, wait_until_up

__all__ = [
    "LOOPBACK_ENV",
    "LocalRayCluster",
    "LocalRayHead",
    "RayNode",
    "wait_for_job_agent",
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
        self.multi_node = False
        """Whether worker nodes may join (see :func:`_ray_start`)."""

    @property
    def address(self) -> str:
        """The dashboard URL, what ``ray job submit --address`` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        """What ``ray start --address`` and ``ray.init(address=...)`` take."""
        return f"127.0.0.1:{self.gcs_port}"

    def start(self) -> LocalRayHead:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="pimc-ray-", dir="/tmp"))
        self.process = _ray_start(
            [
                "--head",
                f"--num-cpus={self.num_cpus}",
                f"--port={self.gcs_port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ],
            self.temp_dir,
            self.env,
            multi_node=self.multi_node,
        )
        try:
            wait_until_up(f"{self.address}/api/version", timeout=120, process=self.process)
            wait_for_job_agent(self.address, timeout=240)  # returns when ready; a loaded machine can be slow
        except BaseException:
            self.stop()
            raise
        logger.info("local Ray head up, dashboard %s", self.address)
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
        self.process = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


def _ray_start(
    args: list[str], temp_dir: Path, env: dict[str, str], *, cwd: Path | None = None, multi_node: bool = False
) -> subprocess.Popen[bytes]:
    """``ray start --block`` with ``args`` in its own process group, Ray's files under ``temp_dir``, its output
    in ``temp_dir/ray-start.log``.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps a single-node Ray on loopback whatever the machine's addresses,
    but it also refuses worker nodes; a multi-node cluster sets it to 1 and relies on ``--node-ip-address``.
    """
    ray_cli = str(Path(sys.executable).parent / "ray")
    clusters = "1" if multi_node else "0"
    full_env = {**os.environ, **env, **LOOPBACK_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": clusters}
    full_env.pop("RAY_ADDRESS", None)  # a client's setting (the tests' "local"): not for a node
    command = [ray_cli, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}"]
    command += [*args, "--disable-usage-stats"]
    with open(temp_dir / "ray-start.log", "wb") as log:
        return subprocess.Popen(
            command, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a ``ray start --block`` and every process it started: SIGTERM (a clean stop), or SIGKILL to the
    whole process group (a machine lost)."""
    if process.poll() is None and not kill:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill = True
    if kill:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


@dataclass
class RayNode:
    """A worker node of a :class:`LocalRayCluster`: its launcher and its own folders."""

    name: str
    """Also a custom resource of the node (``{name: 1}``), by which its Ray node id is found
    (:meth:`LocalRayCluster.node_ids`)."""
    folder: Path
    """``ray/`` (Ray's temporary folder), ``work/`` (working directory) and ``tmp/`` (``TMPDIR``) under it."""
    process: subprocess.Popen[bytes]


class LocalRayCluster(LocalRayHead):
    """A head and ``nodes`` worker nodes on 127.0.0.1, as separate ``ray start`` launchers.

    The head has ``head_cpus`` CPUs (0 by default: drivers and job supervisors run there, but no task or actor
    that needs a CPU), each worker node ``node_cpus``. Every node has its own Ray temporary folder, working
    directory and ``TMPDIR`` under a folder of its own; ``env`` (e.g. the S3 endpoint and credentials) goes to
    every node. :meth:`kill_node` takes a node away as a lost machine would (SIGKILL to all its processes);
    :meth:`add_node` adds one.

    The nodes talk over 127.0.0.1, but with worker nodes allowed Ray's servers listen on every interface (as on a
    real cluster, where they must): start one only on a machine whose other interfaces are firewalled.
    """

    def __init__(
        self, *, nodes: int = 2, node_cpus: int = 1, head_cpus: int = 0, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(num_cpus=head_cpus, env=env)
        self.node_cpus, self.initial_nodes = node_cpus, nodes
        self.multi_node = True
        self.nodes: list[RayNode] = []

    def start(self) -> LocalRayCluster:
        super().start()
        try:
            for _ in range(self.initial_nodes):
                self.add_node()
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, *, timeout: float = 120.0) -> RayNode:
        """Start a worker node and wait until the cluster counts its CPUs."""
        assert self.temp_dir is not None, "start the cluster first"
        name = f"pimc_node_{len(self.nodes)}"
        folder = self.temp_dir / name
        for sub in ("ray", "work", "tmp"):
            (folder / sub).mkdir(parents=True)
        process = _ray_start(
            [f"--address={self.gcs_address}", f"--num-cpus={self.node_cpus}", f'--resources={{"{name}": 1}}'],
            folder / "ray",
            {**self.env, "TMPDIR": str(folder / "tmp")},
            cwd=folder / "work",
            multi_node=True,
        )
        node = RayNode(name, folder, process)
        self.nodes.append(node)
        deadline = time.monotonic() + timeout
        while name not in self.node_ids():
            if process.poll() is not None or time.monotonic() > deadline:
                log = (folder / "ray" / "ray-start.log").read_text(errors="replace")[-2000:]
                raise PimcError(f"worker node {name} did not join the cluster at {self.gcs_address}:\n{log}")
            time.sleep(0.5)
        logger.info("worker node %s joined (%d CPU)", name, self.node_cpus)
        return node

    def node_ids(self) -> dict[str, str]:
        """The Ray node id of every live node, by name: ``head``, and the worker nodes' names."""
        from ray.util.state import list_nodes

        nodes = list_nodes(
            address=self.address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
        )
        ids = {}
        for node in nodes:
            if node.is_head_node:
                ids["head"] = node.node_id
            ids.update(
                {name: node.node_id for name in node.resources_total or {} if name.startswith("pimc_node_")}
            )
        return ids

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL every process of ``node`` (its raylet, workers and actors): a machine lost mid-run."""
        _stop(node.process, kill=True)

    def stop(self) -> None:
        for node in self.nodes:
            _stop(node.process)
        self.nodes = []
        super().stop()
