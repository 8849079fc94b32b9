"""PIMC pretraining on Ray Train: a TorchTrainer (DDP) fed by the Ray Data pair stream, resumable.

:func:`pretrain` is what ``jobs/pretrain.py`` runs::

    driver      search items -> Hilbert-ordered windows -> PairStream.dataset (Ray Data, lazy)
                TorchTrainer(train_loop_per_worker, datasets={"train": pairs}, RunConfig(name, storage_path))
    workers     (:mod:`pimc_ray.training.loop`: gloo on CPU, nccl on GPU; bf16 autocast on GPU)
                pairs (series, patch) -> recurrence plots (rp_from_reflectance, per batch)
                -> PIMCModel (RP encoder, RSI encoder, projections, symmetric InfoNCE over the global batch)
                -> AdamW step; every ``checkpoint_every`` steps a training checkpoint (safetensors + JSON)
    driver      export the encoders of the last checkpoint for mapping (:mod:`pimc_ray.training.export`: what
                ``jobs/embed_aoi.py --checkpoint`` loads): the RP encoder to ``out``, the RSI (image-patch) encoder
                to ``out/rsi``, both to ``out/joint``

Resuming: checkpoints go to ``<storage_path>/<name>/step_<step>``. A job resubmitted with the same name and
storage path continues from the newest complete checkpoint there (weights, optimizer moments and step restored;
the pair stream skips the visits the earlier steps consumed): the driver finds and checks it
(:func:`~pimc_ray.training.checkpoints.resume_step`) and the workers load it, or Ray Train's own latest
checkpoint when that is newer (Ray restarted failed workers within the run). Only rank 0 prints.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from pimc_ray.errors import InternalError, PimcError
from pimc_ray.parallel import check_resources, init_ray
from pimc_ray.progress import Progress
from pimc_ray.storage import UriLike, join_uri
from pimc_ray.training.checkpoints import resume_step, storage_filesystem
from pimc_ray.training.config import RunSpec, TrainConfig
from pimc_ray.training.export import JOINT_EXPORT, RP_EXPORT, RSI_EXPORT, export_encoder
from pimc_ray.training.loop import train_loop_per_worker
from pimc_ray.training.pairs import PairStream

logger = logging.getLogger(__name__)

__all__ = ["PretrainResult", "pretrain", "summary_line", "visits_needed"]


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run left behind."""

    checkpoint: str
    """The last training checkpoint (in the run's storage)."""
    step: int
    """Its step."""
    exported: str | None
    """Where the encoders were exported for mapping (a local folder or a URI), if asked for: the default embedding,
    with the RP encoder in its ``rp`` sub-folder, the RSI encoder in ``rsi`` and both in ``joint``."""
    metrics: dict[str, Any]
    """Metrics of the last report (step, loss)."""
    seconds: float


def visits_needed(config: TrainConfig, stream: PairStream, start_step: int) -> tuple[int, int]:
    """``(first visit, visit count)`` of the pair stream for the steps ``start_step .. config.steps``.

    The first visit skips what earlier steps consumed (assuming full windows); the count has 25 % spare for
    windows with fewer valid pixels (a worker that still runs short starts the same stretch again).
    """
    per_visit = stream.spec.pixels_per_window
    first = start_step * config.batch_size // per_visit
    needed = (config.steps - start_step) * config.batch_size
    return first, math.ceil(1.25 * needed / per_visit) + 2


def pretrain(
    stream: PairStream,
    config: TrainConfig,
    run: RunSpec,
    *,
    export_to: UriLike | None = None,
    progress: Progress = logger.info,
    show_data_progress: bool = False,
) -> PretrainResult:
    """Train (or resume) a PIMC model on Ray Train and export its encoders.

    Args:
        stream: where the pairs come from.
        config: the optimisation.
        run: name, storage and scale of the run.
        export_to: a local folder or a URI (``s3://bucket/models/enc``) to export the trained encoders to (see
            :func:`export_encoder`).
        progress: receives the driver's progress lines (the workers print their own, rank 0 only).
        show_data_progress: Ray Data's progress bars (off: they would drown the training lines).

    Raises:
        CheckpointMismatchError: the run's latest checkpoint holds another model.
        PimcError: a worker failed: the error it raised (e.g. a CheckpointError on a corrupt checkpoint), or an
            :class:`~pimc_ray.errors.InternalError` naming what failed.
    """
    import ray
    import ray.data

    t0 = time.perf_counter()
    _, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    latest = resume_step(run, config.model, progress)
    start = latest[1] if latest else 0
    if latest:
        progress(f"[pretrain] run {run.name!r} has a checkpoint at step {start} in {latest[0]}")
    result_checkpoint, metrics = latest[0] if latest else None, {"step": start}
    if start < config.steps:
        if not ray.is_initialized():
            init_ray(log_to_driver=True)
        run = _fit_to_cluster(run, stream)
        ray.data.DataContext.get_current().enable_progress_bars = show_data_progress
        first, count = visits_needed(config, stream, start)
        progress(
            f"[pretrain] {len(stream.tasks)} windows, visits {first}..{first + count - 1}; "
            f"steps {start}..{config.steps} of {config.batch_size} pairs on {run.workers} workers"
        )
        trainer = _trainer(config, run, stream, latest[0] if latest else None, first, count)
        result = _fit(trainer)
        if result.checkpoint is None:
            raise InternalError(f"pretraining run {run.name!r} finished without a checkpoint")
        result_checkpoint, metrics = result.checkpoint.path, dict(result.metrics or {})
    if result_checkpoint is None:
        raise InternalError(f"pretraining run {run.name!r} has no checkpoint to export")
    exported = None
    if export_to is not None:
        exported = export_encoder(result_checkpoint, export_to, run=run, filesystem=filesystem)
        progress(
            f"[pretrain] exported the default embedding (index series + RP + RSI encoders) to {exported}, the RP "
            f"encoder alone to {join_uri(exported, RP_EXPORT)}, the RSI encoder to {join_uri(exported, RSI_EXPORT)} "
            f"and RP + RSI to {join_uri(exported, JOINT_EXPORT)}"
        )
    step = int(metrics.get("step", start))
    return PretrainResult(str(result_checkpoint), step, exported, metrics, time.perf_counter() - t0)


def _fit_to_cluster(run: RunSpec, stream: PairStream) -> RunSpec:
    """The run's worker CPUs chosen for the cluster (when not given), and the cluster checked to hold the run."""
    import ray

    run = run.fitted(float(ray.cluster_resources().get("CPU", 0.0)))
    if not run.wait_for_resources:
        gpus = run.workers if run.use_gpu else 0
        check_resources(
            {"CPU": run.cpus, "GPU": gpus},
            what=f"pretraining with {run.workers} workers x {run.cpus_per_worker:g} CPU"
            + (" and 1 GPU" if run.use_gpu else "")
            + f" and {run.readers} pair readers x {run.reader_cpus:g} CPU",
            fix="lower --workers, --cpus-per-worker, --readers or --reader-cpus",
        )
    return run


def _trainer(
    config: TrainConfig, run: RunSpec, stream: PairStream, resume_from: str | None, first: int, count: int
) -> Any:
    """The Ray Train ``TorchTrainer`` of a run: the worker loop, its config, scale, storage and pair stream."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from pimc_ray.training.rendezvous import BoundTorchConfig

    storage_path, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": config.to_dict(),
            "resume_from": resume_from,
            "storage": run.storage_path,
            "s3_endpoint": run.s3_endpoint,
            "threads": max(1, int(run.cpus_per_worker or 1)),
            "run_meta": {"run": run.name, "pairs": stream.spec.to_dict()},
        },
        torch_config=BoundTorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=run.workers,
            use_gpu=run.use_gpu,
            resources_per_worker={"CPU": run.cpus_per_worker or 1.0, **({"GPU": 1} if run.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
        ),
        datasets={"train": stream.dataset(start=first, count=count)},
    )


def _fit(trainer: Any) -> Any:
    """``trainer.fit()``, a worker's failure turned into the pimc-ray error it raised (a corrupt checkpoint, an
    area with no pairs), or into an :class:`~pimc_ray.errors.InternalError` that names it."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as err:
        raise _worker_error(err) from err


def _worker_error(err: BaseException) -> PimcError:
    """The pimc-ray error a Ray Train worker raised, from the text of the failure that reached the driver (Ray
    wraps the worker's exception); an :class:`~pimc_ray.errors.InternalError` with its last line otherwise."""
    text = str(err)
    found: tuple[int, type[PimcError]] | None = None
    for cls in _pimc_error_classes():
        at = text.rfind(f"{cls.__name__}: ")
        if at >= 0 and (found is None or at > found[0]):
            found = (at, cls)
    if found is not None:
        at, cls = found
        line = text[at + len(cls.__name__) + 2 :].strip().splitlines()
        return cls(line[0] if line else "a pretraining worker failed")
    last = [line for line in text.strip().splitlines() if line.strip()]
    return InternalError(
        f"pretraining failed on a worker: {last[-1].strip() if last else type(err).__name__}"
    )


def _pimc_error_classes() -> list[type[PimcError]]:
    import pimc_ray.errors as errors

    return [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, PimcError) and cls is not PimcError
    ]


def summary_line(result: PretrainResult) -> str:
    """One line for the job's output."""
    return json.dumps(
        {"step": result.step, "loss": result.metrics.get("loss"), "seconds": round(result.seconds, 1)}
    )
