"""The mapping job on a Ray cluster of several nodes on this machine, sharing nothing but the network and S3.

A head (no CPUs: the job's driver runs there, no tile can) and two worker nodes of one CPU each, started with
``ray start`` (:class:`~pimc_ray.local.LocalRayCluster`), each with its own Ray temporary folder, working directory
and ``TMPDIR``. The encoder checkpoint and the outputs live only in the local S3 store. Checked:

* the tiles were written by processes of the worker nodes: every tile's status object names the Ray node of the
  worker that published it (``worker.ray_node``, the node id Ray's runtime context gives the actor), and it is a
  worker node's id, never the head's;
* a worker node killed mid-run (SIGKILL to all its processes, as a lost machine) fails only the tiles it held;
  after a node is added back, the same command completes the run: every tile published exactly once, the tiles
  finished before the kill not rewritten;
* the maps equal, bit for bit, those of the same job run in one process (``--workers 0``, on one CPU as each
  worker computes with one torch thread: torch's sums depend on its thread count) into a local folder.
"""

import re
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from pimc_ray.storage import gdal_s3_env
from tests.mapping.test_map_jobs import BUCKET, JOBS, bucket_keys, job_args, read_json, submit_job

pytestmark = pytest.mark.slow

PREFIX = "multinode"
TILES = 8  # 64-pixel tiles over the demo AOI at 128-pixel archive tiles


@pytest.fixture(scope="module")
def cluster(s3):
    from pimc_ray.local import LocalRayCluster

    with LocalRayCluster(nodes=2, node_cpus=1, env=s3.env()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def model_uri(s3):
    """An encoder checkpoint that exists only in the bucket."""
    from pimc_ray.models import EncoderConfig, save_checkpoint

    config = EncoderConfig(seed=3)
    return save_checkpoint(f"s3://{BUCKET}/{PREFIX}/model", config.build(), config)


def statuses(prefix):
    return {k.rsplit("/", 1)[1].removesuffix(".json"): read_json(k) for k in bucket_keys(f"{prefix}/status/")}


def job_status(cluster, job_id):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(cluster.address).get_job_status(job_id)


def test_a_worker_node_lost_mid_run_then_a_rerun_completes_with_maps_equal_to_one_process(
    cluster, stac_api, s3, model_uri, tmp_path
):
    from ray.job_submission import JobStatus

    prefix = f"{PREFIX}/maps"
    args = job_args(
        stac_api.url,
        f"s3://{BUCKET}/{prefix}",
        **{"--checkpoint": model_uri, "--window-size": "32", "--workers": "2"},
    )
    nodes = cluster.node_ids()
    workers = {nodes[n.name] for n in cluster.nodes}
    proc = submit_job(cluster.address, args, wait=False)
    assert proc.returncode == 0, proc.stderr
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", proc.stdout + proc.stderr).group(0)

    deadline = time.monotonic() + 300
    while not any(e["status"] == "done" for e in statuses(prefix).values()):
        assert time.monotonic() < deadline, "no tile was published within 300 s"
        status = job_status(cluster, job_id)
        assert status in {JobStatus.PENDING, JobStatus.RUNNING}, f"the job ended ({status}) before the kill"
        time.sleep(0.3)
    lost = cluster.nodes[1]
    cluster.kill_node(lost)
    while (status := job_status(cluster, job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED}:
        assert time.monotonic() < deadline + 300, "the job did not end after its node was lost"
        time.sleep(1)
    first = {t: e for t, e in statuses(prefix).items() if e["status"] == "done"}
    assert status == JobStatus.FAILED and 1 <= len(first) < TILES, (status, len(first))
    before = {k: o["LastModified"] for k, o in bucket_keys(f"{prefix}/tiles").items()}

    replacement = cluster.add_node()  # what an autoscaler does; the same command then completes the run
    workers.add(cluster.node_ids()[replacement.name])
    again = submit_job(cluster.address, args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(first)} already done, 0 changed" in again.stdout

    final = statuses(prefix)
    assert len(final) == TILES and all(e["status"] == "done" for e in final.values())
    for tile, entry in final.items():
        assert entry["worker"]["ray_node"] in workers, f"{tile} was not written by a worker node"
        assert entry["worker"]["ray_node"] != nodes["head"]
    keys = bucket_keys(f"{prefix}/tiles")
    for tile, entry in first.items():  # finished before the loss: kept, not redone
        assert final[tile] == entry
        for key in entry["files"]:
            assert keys[f"{prefix}/{key}"]["LastModified"] == before[f"{prefix}/{key}"]
    assert sum(k.endswith("/embedding.tif") for k in keys) == TILES
    assert sum(k.endswith("/item.json") for k in keys) == TILES

    local = tmp_path / "one-process"  # on one CPU, as each worker computes with one torch thread
    one_args = job_args(
        stac_api.url, local, **{"--checkpoint": model_uri, "--window-size": "32", "--workers": "0"}
    )
    one = subprocess.run(
        ["taskset", "-c", "0", sys.executable, str(JOBS / "embed_aoi.py"), *one_args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    with rasterio.Env(**gdal_s3_env()):
        for tile in final:
            for product in ("embedding", "qa"):
                with rasterio.open(f"/vsis3/{BUCKET}/{prefix}/tiles/{tile}/v1/{product}.tif") as a:
                    cluster_pixels = a.read()
                with rasterio.open(local / "tiles" / tile / "v1" / f"{product}.tif") as b:
                    process_pixels = b.read()
                np.testing.assert_array_equal(cluster_pixels, process_pixels, err_msg=f"{tile} {product}")
