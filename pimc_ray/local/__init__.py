"""Local stand-ins for the cloud, for the demo, the tests and the benchmarks (the ``local`` extra).

- :mod:`~pimc_ray.local.archive`: the generated, deterministic sample Sentinel-2 L2A archive (with
  :mod:`~pimc_ray.local.archive_grid`, :mod:`~pimc_ray.local.archive_scenes`, :mod:`~pimc_ray.local.archive_stac`)
  and :mod:`~pimc_ray.local.areas`, its demo areas;
- :mod:`~pimc_ray.local.stac_server`: a STAC API over it (``rustac serve``);
- :mod:`~pimc_ray.local.s3_server`: an S3-compatible store (SeaweedFS);
- :mod:`~pimc_ray.local.ray_cluster`: a Ray head on loopback.

Every server binds 127.0.0.1 on free ports and stops when its ``with`` block ends. The library never imports this
package; only :mod:`pimc_ray.cli` (``pimc archive``, ``pimc stac serve``, ``pimc s3 serve``) does.
"""

from pimc_ray.local._service import free_port, wait_until_up
from pimc_ray.local.archive import ArchiveInfo, ArchiveSpec, build_archive
from pimc_ray.local.areas import demo_aoi, demo_train_aoi, tile_bbox
from pimc_ray.local.ray_cluster import LocalRayCluster, LocalRayHead, wait_for_job_agent
from pimc_ray.local.s3_server import LocalS3Server
from pimc_ray.local.stac_server import LocalStacServer

__all__ = [
    "ArchiveInfo",
    "ArchiveSpec",
    "LocalRayCluster",
    "LocalRayHead",
    "LocalS3Server",
    "LocalStacServer",
    "build_archive",
    "demo_aoi",
    "demo_train_aoi",
    "free_port",
    "tile_bbox",
    "wait_for_job_agent",
    "wait_until_up",
]
