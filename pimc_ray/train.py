"""PIMC pretraining on Ray Train: a TorchTrainer (DDP) fed by the Ray Data pair stream, resumable.

:func:`pretrain` is what ``jobs/pretrain.py`` runs::

    driver      search items -> Hilbert-ordered windows -> PairStream.dataset (Ray Data, lazy)
                TorchTrainer(train_loop_per_worker, datasets={"train": pairs}, RunConfig(name, storage_path))
    workers     (gloo on CPU, nccl on GPU; bf16 autocast on GPU)
                pairs (series, patch) -> recurrence plots (rp_from_reflectance, per batch)
                -> PIMCModel (RP encoder, RSI encoder, projections, symmetric InfoNCE over the global batch)
                -> AdamW step; every ``checkpoint_every`` steps a training checkpoint (safetensors + JSON)
    driver      export the encoders of the last checkpoint for mapping (what ``jobs/embed_aoi.py --checkpoint``
                loads): the RP encoder to ``out``, the RSI (image-patch) encoder to ``out/rsi``

Resuming: checkpoints go to ``<storage_path>/<name>/step_<step>``. A job resubmitted with the same name and
storage path continues from the newest complete checkpoint there (weights, optimizer moments and step restored;
the pair stream skips the visits the earlier steps consumed): the driver finds and checks it
(:func:`resume_step`) and the workers load it, or Ray Train's own latest checkpoint when that is newer (Ray
restarted failed workers within the run). Only rank 0 prints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.models.pimc import PIMCConfig
from pimc_ray.pairs import PairStream

logger = logging.getLogger(__name__)

#: Name of each checkpoint folder under ``<storage_path>/<run name>/``.
CHECKPOINT_PREFIX = "step_"
#: Sub-folder of an export holding the RSI (image-patch) encoder, an encoder checkpoint of its own.
RSI_EXPORT = "rsi"
#: Sub-folder of an export holding both encoders side by side (``pimc-joint``), an encoder checkpoint too.
JOINT_EXPORT = "joint"


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: model, steps, batch, optimizer and schedule, checkpoint cadence."""

    model: PIMCConfig = field(default_factory=PIMCConfig)
    steps: int = 1000
    """Optimizer steps of the whole run (a resumed run continues up to this)."""
    batch_size: int = 256
    """Global batch (pairs per step over all workers; every pair is a negative for the others)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    """Linear warm-up, then cosine decay to 0 at ``steps``."""
    checkpoint_every: int = 100
    log_every: int = 20
    shuffle_buffer: int = 2048
    """Pairs in each worker's local shuffle buffer (mixes pairs of several windows into a batch)."""
    time_shift: int = 2
    """Augmentation: each pair's series is shifted by a random whole number of grid steps in
    ``[-time_shift, time_shift]`` (edge values repeated) before its plots are built, so that the RP encoder
    learns features that survive a field sown a little earlier or a region a little later (2: up to 20 days
    either way on the default 10-day grid; 0: none, as in the paper)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if (
            min(self.weight_decay, self.warmup_steps, self.shuffle_buffer, self.time_shift) < 0
            or self.lr <= 0
        ):
            raise ValueError(
                "lr must be positive; weight_decay, warmup_steps, shuffle_buffer and time_shift non-negative"
            )

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "model"}
        return {"model": self.model.to_dict(), **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        rest = {k: v for k, v in data.items() if k != "model"}
        return cls(model=PIMCConfig.from_dict(data["model"]), **rest)


@dataclass(frozen=True)
class RunSpec:
    """Where a run keeps its checkpoints and how wide it runs."""

    name: str
    """Run name: a resubmitted job with the same name and storage resumes."""
    storage_path: str
    """Local folder, or an ``s3://bucket/prefix`` URI (see :func:`storage_filesystem`)."""
    workers: int = 2
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """One GPU per worker, nccl, bf16 autocast."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves; leave some to the pair readers (e.g. 0.5 x 2 workers on 2 cores)."""
    readers: int = 1
    """Ray Data actors reading pair windows."""
    reader_cpus: float = 1.0
    keep_checkpoints: int = 3
    """Checkpoints kept in storage (the newest)."""
    s3_endpoint: str | None = None
    """Endpoint of an S3-compatible store (SeaweedFS, MinIO); AWS's when None."""
    max_failures: int = 0
    """Worker-group failures Ray Train recovers from within the run (restarting from the latest checkpoint)."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"run name must be a non-empty name without '/', got {self.name!r}")
        if self.workers < 1 or self.readers < 1 or self.keep_checkpoints < 1 or self.max_failures < 0:
            raise ValueError(
                "workers, readers and keep_checkpoints must be at least 1, max_failures at least 0"
            )


def storage_filesystem(uri: str, *, endpoint: str | None = None) -> tuple[str, Any]:
    """``(storage_path, pyarrow filesystem or None)`` for Ray's ``RunConfig`` from a folder or an S3 URI.

    A local path becomes absolute (Ray needs that). ``s3://bucket/prefix`` is given an explicit
    ``pyarrow.fs.S3FileSystem``, and the path loses its scheme, as Ray expects then. Its credentials come from
    the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``; pyarrow's default
    chain when they are not set), its region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (``us-east-1``), and
    ``endpoint`` or ``AWS_ENDPOINT_URL`` points it at an S3-compatible store such as SeaweedFS or MinIO, with
    path-style requests (``http://host:port/bucket/key``) there, which is what those stores serve.
    """
    if uri.startswith("s3://"):
        from pyarrow import fs

        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise ValueError(f"storage {uri!r} names no bucket: use s3://bucket/prefix")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.rstrip("/").rpartition("://")
            kwargs = {
                "endpoint_override": host,
                "scheme": scheme or "https",
                "force_virtual_addressing": False,
            }
        env = os.environ
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            kwargs["access_key"] = env["AWS_ACCESS_KEY_ID"]
            kwargs["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
            if env.get("AWS_SESSION_TOKEN"):
                kwargs["session_token"] = env["AWS_SESSION_TOKEN"]
        kwargs["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return uri.removeprefix("s3://").rstrip("/"), fs.S3FileSystem(**kwargs)
    if "://" in uri:
        raise ValueError(f"storage {uri!r}: use a local folder or an s3:// URI")
    return str(Path(uri).expanduser().resolve()), None


def checkpoint_step(name: str) -> int | None:
    """The step in a checkpoint folder name ``step_00000100``, None for other names."""
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if digits.isdigit() else None


def checkpoints(run: RunSpec) -> list[tuple[int, str]]:
    """``(step, path)`` of a run's checkpoints that have their ``config.json``, newest first."""
    from pyarrow import fs

    path, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    filesystem = filesystem or fs.LocalFileSystem()
    run_dir = f"{path}/{run.name}"
    try:
        infos = filesystem.get_file_info(fs.FileSelector(run_dir, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        step = checkpoint_step(info.base_name)
        if info.type == fs.FileType.Directory and step is not None:
            if filesystem.get_file_info(f"{info.path}/config.json").type == fs.FileType.File:
                found.append((step, info.path))
    return sorted(found, reverse=True)


def latest_checkpoint(run: RunSpec) -> tuple[str, int] | None:
    """``(path, step)`` of the newest checkpoint of a run that has its ``config.json``, None if there is none."""
    found = checkpoints(run)
    return (found[0][1], found[0][0]) if found else None


def resume_step(run: RunSpec, model: PIMCConfig, progress: Callable[[str], None]) -> tuple[str, int] | None:
    """The checkpoint a resubmitted run continues from, checked before any worker starts.

    Each candidate, newest first, is loaded (hashes, model; from object storage through a temporary copy): one
    that holds another model is refused; an incomplete or corrupt one (a job killed while the checkpoint was being
    copied) is skipped with a message, and the next older one is taken.

    Raises:
        CheckpointMismatchError: the run's checkpoint holds another model than ``model``.
    """
    from pimc_ray.errors import CheckpointError, CheckpointMismatchError
    from pimc_ray.models.train_state import load_training_checkpoint

    _, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    for step, path in checkpoints(run):
        try:
            if filesystem is None:
                load_training_checkpoint(path, expect=model)
            else:
                from pyarrow import fs

                with tempfile.TemporaryDirectory(prefix="pimc-resume-") as tmp:
                    fs.copy_files(path, tmp, source_filesystem=filesystem)
                    load_training_checkpoint(tmp, expect=model)
        except CheckpointMismatchError:
            raise
        except CheckpointError as err:
            progress(f"[pretrain] skipping {path}: {err}")
            continue
        return path, step
    return None


# --- the per-worker loop ------------------------------------------------------------------------------------


def plots_from_series(series: np.ndarray) -> Any:
    """``(n, 3, T)`` blue/red/NIR series -> ``(n, 3, T, T)`` float32 torch plots, exactly as the mapping job."""
    import torch

    from pimc_ray.recurrence import rp_from_reflectance

    return torch.from_numpy(rp_from_reflectance(series[:, 0], series[:, 1], series[:, 2]))


def move_series(series: np.ndarray, shifts: int | np.ndarray) -> np.ndarray:
    """``(n, C, T)`` series, sample ``i`` moved ``shifts[i]`` grid steps later (earlier when negative).

    ``out[i, :, t] = series[i, :, clip(t - s_i, 0, T - 1)]``, with the first (or last) value repeated into the
    steps the move uncovers. ``shifts`` is one per sample, or one for all.
    """
    n, _, steps = series.shape
    per_sample = np.broadcast_to(np.asarray(shifts), (n,))
    source = np.clip(np.arange(steps)[None, :] - per_sample[:, None], 0, steps - 1)  # (n, T)
    return np.take_along_axis(series, source[:, None, :], axis=2)


def shift_series(series: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """The augmentation: each sample of ``(n, C, T)`` series moved by its own random ``s`` in
    ``[-max_shift, max_shift]`` steps (:func:`move_series`)."""
    if max_shift == 0:
        return series
    return move_series(series, rng.integers(-max_shift, max_shift + 1, size=len(series)))


def _optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker body; ``loop_config`` holds ``train`` (a :class:`TrainConfig` dict) and ``threads``."""
    import ray.train
    import ray.train.torch
    import torch

    from pimc_ray.models.train_state import unwrap

    config = TrainConfig.from_dict(loop_config["train"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} does not split over {world} workers")
    torch.set_num_threads(int(loop_config.get("threads", 1)))
    say = _say if rank == 0 else (lambda msg: None)

    model, step, optimizer_state = config.model.build(), 0, None
    restored = _restore(loop_config, config.model)
    if restored is not None:
        where, state = restored
        model, step, optimizer_state = state.model, state.step, state.optimizer_state
        say(f"[pretrain] resuming from {where} at step {step}")
    run_meta = {**loop_config.get("run_meta", {}), "started_at": step}
    model = ray.train.torch.prepare_model(model)  # device, then DDP when world > 1
    optimizer = _optimizer(model, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    device = ray.train.torch.get_device()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    shard = ray.train.get_dataset_shard("train")
    local_batch = config.batch_size // world
    losses: list[float] = []
    t0, pairs = 0.0, 0
    augment = np.random.default_rng([config.seed, rank, step])  # a resumed run draws new shifts
    while step < config.steps:
        batches = shard.iter_batches(
            batch_size=local_batch,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=config.shuffle_buffer or None,
            local_shuffle_seed=config.seed + step + rank if config.shuffle_buffer else None,
        )
        seen = 0
        for batch in batches:
            seen += 1
            if not t0:
                t0 = time.perf_counter()  # rate from the first batch: startup is not throughput
            series = shift_series(batch["series"], config.time_shift, augment)
            plots = plots_from_series(series).to(device, non_blocking=True)
            patches = torch.from_numpy(batch["patch"]).to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            with autocast:
                loss = model(plots, patches)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            pairs += len(plots) * world
            losses.append(float(loss.detach()))
            if step % config.log_every == 0 or step == config.steps:
                rate = pairs / (time.perf_counter() - t0)
                tau = unwrap(model).loss.temperature
                say(
                    f"[pretrain] step {step}/{config.steps}  loss {np.mean(losses[-config.log_every :]):.4f}  "
                    f"lr {config.lr_at(step - 1):.2e}  tau {tau:.4f}  {rate:.0f} pairs/s"
                )
            if step % config.checkpoint_every == 0 or step == config.steps:
                metrics = {"step": step, "loss": float(np.mean(losses[-config.checkpoint_every :]))}
                _report(model, optimizer, step, metrics, rank, run_meta)
            if step >= config.steps:
                break
        if seen == 0:
            raise RuntimeError(
                "the pair stream gave no batch: the training area has no valid pixels, or fewer pairs than "
                f"one batch of {local_batch} per worker; check --aoi and the dates"
            )


def _restore(loop_config: Mapping[str, Any], model: PIMCConfig) -> tuple[str, Any] | None:
    """The newest of the checkpoint the driver chose (``resume_from``) and Ray Train's latest one.

    The driver's choice is the newest complete checkpoint in storage: Ray Train registers a checkpoint only after
    its controller has seen the report, so a job stopped right after writing one resumes from an older one if
    only Ray's snapshot is asked. Ray's own checkpoint is newer when Ray restarted failed workers in this run.
    The driver's choice is read through the filesystem the driver gave Ray Train (endpoint and credentials as
    the driver resolved them), so a worker needs no S3 variables of its own.
    """
    import ray.train

    from pimc_ray.models.train_state import load_training_checkpoint

    options = []
    if loop_config.get("resume_from"):
        try:
            filesystem = ray.train.get_context().get_storage().storage_filesystem
        except (AttributeError, NotImplementedError):  # a Ray without the DeveloperAPI: build it here
            _, filesystem = storage_filesystem(
                loop_config["storage"], endpoint=loop_config.get("s3_endpoint")
            )
        options.append(ray.train.Checkpoint(path=loop_config["resume_from"], filesystem=filesystem))
    latest = ray.train.get_checkpoint()
    if latest is not None:
        options.append(latest)
    best: tuple[str, Any] | None = None
    for checkpoint in options:
        with checkpoint.as_directory() as folder:
            state = load_training_checkpoint(folder, expect=model)
        if best is None or state.step > best[1].step:
            best = (checkpoint.path, state)
    return best


def _say(message: str) -> None:
    """Print one line from a worker. Ray Train patches ``print`` to log and also tee to a wrapped stdout, so
    the line would show twice; writing to the process's own stdout shows it once."""
    print(message, file=sys.__stdout__, flush=True)


def _report(
    model: Any, optimizer: Any, step: int, metrics: dict[str, Any], rank: int, run_meta: Mapping[str, Any]
) -> None:
    """Every rank reports (a barrier); rank 0 attaches the training checkpoint."""
    import ray.train

    from pimc_ray.models.train_state import save_training_checkpoint

    name = f"{CHECKPOINT_PREFIX}{step:08d}"
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with tempfile.TemporaryDirectory(prefix="pimc-ckpt-") as tmp:
        folder = save_training_checkpoint(
            Path(tmp) / "ckpt", model, optimizer, step=step, extra={**run_meta, "loss": metrics["loss"]}
        )
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)), checkpoint_dir_name=name
        )


# --- the driver ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run left behind."""

    checkpoint: str
    """The last training checkpoint (in the run's storage)."""
    step: int
    """Its step."""
    exported: Path | None
    """The RP encoder exported for mapping (model.safetensors + config.json), if asked for; the RSI encoder is
    in its ``rsi`` sub-folder."""
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
    export_to: Path | None = None,
    progress: Callable[[str], None] = logger.info,
    show_data_progress: bool = False,
) -> PretrainResult:
    """Train (or resume) a PIMC model on Ray Train and export its encoders.

    Args:
        stream: where the pairs come from.
        config: the optimisation.
        run: name, storage and scale of the run.
        export_to: write the trained RP encoder there (model.safetensors + config.json), and the RSI encoder to
            its ``rsi`` sub-folder (see :func:`export_encoder`).
        progress: receives the driver's progress lines (the workers print their own, rank 0 only).
        show_data_progress: Ray Data's progress bars (off: they would drown the training lines).

    Raises:
        CheckpointMismatchError: the run's latest checkpoint holds another model.
        ray.train.TrainingFailedError: a worker failed, e.g. on a corrupt checkpoint (a CheckpointError).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t0 = time.perf_counter()
    storage_path, filesystem = storage_filesystem(run.storage_path, endpoint=run.s3_endpoint)
    latest = resume_step(run, config.model, progress)
    start = latest[1] if latest else 0
    if latest:
        progress(f"[pretrain] run {run.name!r} has a checkpoint at step {start} in {latest[0]}")
    result_checkpoint, metrics = latest[0] if latest else None, {"step": start}
    if start < config.steps:
        if not ray.is_initialized():
            ray.init(log_to_driver=True)
        ray.data.DataContext.get_current().enable_progress_bars = show_data_progress
        first, count = visits_needed(config, stream, start)
        progress(
            f"[pretrain] {len(stream.tasks)} windows, visits {first}..{first + count - 1}; "
            f"steps {start}..{config.steps} of {config.batch_size} pairs on {run.workers} workers"
        )
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "train": config.to_dict(),
                "resume_from": latest[0] if latest else None,
                "storage": run.storage_path,
                "s3_endpoint": run.s3_endpoint,
                "threads": max(1, int(run.cpus_per_worker)),
                "run_meta": {"run": run.name, "pairs": stream.spec.to_dict()},
            },
            torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=run.workers,
                use_gpu=run.use_gpu,
                resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
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
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"run {run.name!r} finished without a checkpoint")
        result_checkpoint, metrics = result.checkpoint.path, dict(result.metrics or {})
    if result_checkpoint is None:
        raise RuntimeError(f"run {run.name!r} has no checkpoint to export")
    exported = None
    if export_to is not None:
        exported = export_encoder(result_checkpoint, export_to, run=run, filesystem=filesystem)
        progress(
            f"[pretrain] exported the RP encoder to {exported}, the RSI encoder to {exported / RSI_EXPORT} "
            f"and both (joint) to {exported / JOINT_EXPORT}"
        )
    step = int(metrics.get("step", start))
    return PretrainResult(str(result_checkpoint), step, exported, metrics, time.perf_counter() - t0)


def export_encoder(checkpoint: str, out: Path, *, run: RunSpec | None = None, filesystem: Any = None) -> Path:
    """Write the encoders of a training checkpoint (local or in object storage) for mapping; returns ``out``.

    Three encoder checkpoints, each one ``jobs/embed_aoi.py --checkpoint`` and :func:`load_checkpoint` accept::

        out/model.safetensors, out/config.json              the RP encoder (rp-resnet)
        out/rsi/model.safetensors, out/rsi/config.json      the RSI encoder (rsi-cnn), with a ``patches`` record
                                                            (bands, composite, patch size) of its pretraining pairs
        out/joint/model.safetensors, out/joint/config.json  both side by side (pimc-joint), the same record

    Every ``config.json`` has ``"kind": "pimc-encoder"``, the ``branch`` (``rp``, ``rsi`` or ``joint``) and a
    ``trained`` record. Loading ``out`` reads and hashes its own two files only, so the sub-folders do not disturb
    it; they are written after the RP encoder, because writing a checkpoint replaces its whole folder.
    """
    from pimc_ray.catalogs import BANDS
    from pimc_ray.models.checkpoint import EncoderConfig, save_checkpoint
    from pimc_ray.models.train_state import load_training_checkpoint
    from pimc_ray.patches import MEDIAN

    with tempfile.TemporaryDirectory(prefix="pimc-export-") as tmp:
        local = checkpoint
        if filesystem is not None:
            from pyarrow import fs

            fs.copy_files(checkpoint, tmp, source_filesystem=filesystem)
            local = tmp
        state = load_training_checkpoint(local)
        config = state.model.config
        pairs = state.meta.get("pairs")
        meta = {
            "kind": "pimc-encoder",
            "trained": {
                "run": run.name if run else None,
                "step": state.step,
                "loss": state.meta.get("loss"),
                "from": str(checkpoint),
                "pimc": state.meta["pimc"],
                "pairs": pairs,
            },
        }
        patches = {
            "bands": list(BANDS),
            "composite": (pairs or {}).get("composite", MEDIAN),
            "patch_size": config.patch_size,
        }
        folder = save_checkpoint(out, state.model.rp, config.rp, extra={**meta, "branch": "rp"})
        save_checkpoint(
            folder / RSI_EXPORT,
            state.model.rsi,
            config.rsi,
            extra={**meta, "branch": "rsi", "patches": patches},
        )
        joint_config = EncoderConfig(
            name="pimc-joint", params={"rp": config.rp.to_dict(), "rsi": config.rsi.to_dict()}
        )
        joint = joint_config.build()
        joint.rp.load_state_dict(state.model.rp.state_dict())
        joint.rsi.load_state_dict(state.model.rsi.state_dict())
        save_checkpoint(
            folder / JOINT_EXPORT, joint, joint_config, extra={**meta, "branch": "joint", "patches": patches}
        )
        return folder


def summary_line(result: PretrainResult) -> str:
    """One line for the job's output."""
    return json.dumps(
        {"step": result.step, "loss": result.metrics.get("loss"), "seconds": round(result.seconds, 1)}
    )
