"""`ray job submit jobs/pretrain.py` on a Ray cluster of several nodes on this machine, sharing nothing but the
network and S3: the two DDP ranks run on two nodes, meet at the rendezvous store bound to a node's address
(:mod:`pimc_ray.training.rendezvous`), train, checkpoint and export only to the bucket.

A head with no CPUs (the job's driver runs there, no rank can) and two worker nodes of one CPU each, started with
``ray start`` (:class:`~pimc_ray.local.LocalRayCluster`). Each rank asks for 0.75 CPU, so no node holds both: which
node ran each rank comes from Ray's state API (the ``RayTrainWorker`` actors, kept after they end), not from the
job's own account.
"""

import pytest

from pimc_ray.models import load_checkpoint, load_training_checkpoint
from tests.mapping.test_map_jobs import BUCKET, bucket_keys, submit_job
from tests.training.test_pretrain_job import pretrain_args

pytestmark = pytest.mark.slow

PREFIX = "pretrain-multinode"
STEPS = 8


@pytest.fixture(scope="module")
def cluster(s3):
    from pimc_ray.local import LocalRayCluster

    with LocalRayCluster(nodes=2, node_cpus=1, env=s3.env()) as cluster:
        yield cluster


def test_two_ranks_on_two_nodes_train_and_export_to_the_bucket(cluster, stac_api, s3):
    from ray.util.state import list_actors

    out, runs = f"s3://{BUCKET}/{PREFIX}/model", f"s3://{BUCKET}/{PREFIX}/runs"
    args = pretrain_args(stac_api.url, out, steps=STEPS)  # type: ignore[arg-type]
    args += ["--storage", runs, "--workers", "2", "--cpus-per-worker", "0.75", "--reader-cpus", "0.25"]
    proc = submit_job(cluster.address, args, job="pretrain.py")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    nodes = cluster.node_ids()
    workers = {nodes[n.name] for n in cluster.nodes}
    actors = list_actors(
        address=cluster.address,
        filters=[("class_name", "=", "RayTrainWorker")],
        limit=1000,
        raise_on_missing_output=False,
    )
    assert len(actors) == 2 and {a.node_id for a in actors} == workers, [(a.node_id, a.state) for a in actors]

    encoder, meta = load_checkpoint(out)  # read from the bucket: no path is shared between the nodes
    assert meta["trained"]["step"] == STEPS and encoder.embed_dim == 3 * 36 + 64 + 64
    state = load_training_checkpoint(f"{runs}/model/step_{STEPS:08d}")
    assert state.step == STEPS
    assert any(k.endswith("/config.json") for k in bucket_keys(f"{PREFIX}/model/rp/"))
