"""Pretraining: PIMC pairs streamed from the archive into a Ray Train loop, resumable, exported for mapping.

- :mod:`~pimc_ray.training.pairs`: (series, image patch) pairs, Hilbert-spread, as a Ray Data stream;
- :mod:`~pimc_ray.training.config`: :class:`TrainConfig` (the optimisation) and :class:`RunSpec` (storage, scale);
- :mod:`~pimc_ray.training.loop`: the Ray Train worker (augmentation, plots, loss, steps, checkpoints);
- :mod:`~pimc_ray.training.checkpoints`: checkpoint storage (local or S3) and which one a run resumes from;
- :mod:`~pimc_ray.training.trainer`: :func:`pretrain`, the driver;
- :mod:`~pimc_ray.training.export`: :func:`export_encoder`, the encoders a mapping job loads.

Names load on first use, so a pair reader does not import Ray Train.
"""

from pimc_ray._exports import lazy_exports

_API = {
    "PairSpec": "pimc_ray.training.pairs",
    "PairStream": "pimc_ray.training.pairs",
    "training_tasks": "pimc_ray.training.pairs",
    "RunSpec": "pimc_ray.training.config",
    "TrainConfig": "pimc_ray.training.config",
    "train_loop_per_worker": "pimc_ray.training.loop",
    "resume_step": "pimc_ray.training.checkpoints",
    "storage_filesystem": "pimc_ray.training.checkpoints",
    "PretrainResult": "pimc_ray.training.trainer",
    "pretrain": "pimc_ray.training.trainer",
    "export_encoder": "pimc_ray.training.export",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
