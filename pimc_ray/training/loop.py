"""The Ray Train worker: pairs -> recurrence plots -> PIMC loss -> AdamW, with checkpoints and resume.

:func:`train_loop_per_worker` is what every Ray Train worker runs (one DDP rank each)::

    pairs (series, patch) from this rank's shard of the pair stream
      -> series moved by the time-shift augmentation (:func:`shift_series`)
      -> recurrence plots (:func:`plots_from_series`, exactly as the mapping job builds them)
      -> PIMCModel: both encoders, both projections, symmetric InfoNCE over the global batch
      -> AdamW step at the scheduled learning rate
      -> every ``log_every`` steps a line (rank 0), every ``checkpoint_every`` steps a training checkpoint

A worker starts from the newest of the checkpoint the driver chose and Ray Train's own (see :func:`_restore`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.errors import AllCloudError
from pimc_ray.models.pimc import PIMCConfig
from pimc_ray.scratch import temporary_folder
from pimc_ray.training.checkpoints import CHECKPOINT_PREFIX, storage_filesystem
from pimc_ray.training.config import TrainConfig

__all__ = ["haze_series", "move_series", "plots_from_series", "shift_series", "train_loop_per_worker"]


def plots_from_series(series: np.ndarray) -> Any:
    """``(n, 3, T)`` blue/red/NIR series -> ``(n, 3, T, T)`` float32 torch plots, exactly as the mapping job."""
    import torch

    from pimc_ray.kernels.recurrence import rp_from_reflectance

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


#: Relative path reflectance of an aerosol residual in blue, red and NIR (about ``(lambda / 490 nm) ** -1.5``).
_AEROSOL_SHAPE = np.array([1.00, 0.62, 0.42], dtype=np.float32)


def haze_series(
    series: np.ndarray, probability: float, rng: np.random.Generator, *, most: float = 0.05
) -> np.ndarray:
    """The haze augmentation: ``(n, 3, T)`` blue, red, NIR series with each step of each sample hazed with
    ``probability``: ``x * (1 - 2 a) + a * shape``, ``a`` uniform in ``[0, most]``, ``shape`` the aerosol
    path reflectance of blue, red and NIR (1, 0.62, 0.42)."""
    if probability == 0:
        return series
    n, _, steps = series.shape
    load = np.where(rng.random((n, 1, steps)) < probability, rng.uniform(0, most, (n, 1, steps)), 0.0)
    load = load.astype(np.float32)
    return series * (1 - 2 * load) + load * _AEROSOL_SHAPE[None, :, None]


class _Worker:
    """One rank's training state: model (DDP-wrapped), optimizer, step, recent losses and throughput."""

    def __init__(self, loop_config: Mapping[str, Any]) -> None:
        import ray.train
        import ray.train.torch
        import torch

        self.config = config = TrainConfig.from_dict(loop_config["train"])
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        if config.batch_size % self.world:
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world} workers")
        torch.set_num_threads(int(loop_config.get("threads", 1)))

        model, self.step, optimizer_state = config.model.build(), 0, None
        restored = _restore(loop_config, config.model)
        if restored is not None:
            where, state = restored
            model, self.step, optimizer_state = state.model, state.step, state.optimizer_state
            self.say(f"[pretrain] resuming from {where} at step {self.step}")
        self.run_meta = {**loop_config.get("run_meta", {}), "started_at": self.step}
        self.model = ray.train.torch.prepare_model(model)  # device, then DDP when world > 1
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.device = ray.train.torch.get_device()
        self.autocast: Any = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        self.local_batch = config.batch_size // self.world
        self.augment = np.random.default_rng([config.seed, self.rank, self.step])  # a resumed run: new shifts
        self.losses: list[float] = []
        self.t0, self.pairs = 0.0, 0

    def say(self, message: str) -> None:
        """Print one line, from rank 0 only. Ray Train patches ``print`` to log and also tee to a wrapped stdout,
        so the line would show twice; writing to the process's own stdout shows it once."""
        if self.rank == 0:
            print(message, file=sys.__stdout__, flush=True)

    def batches(self, shard: Any) -> Any:
        """One pass over this rank's shard, in local batches, mixed in a seeded shuffle buffer."""
        c = self.config
        return shard.iter_batches(
            batch_size=self.local_batch,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=c.shuffle_buffer or None,
            local_shuffle_seed=c.seed + self.step + self.rank if c.shuffle_buffer else None,
        )

    def train_step(self, batch: Mapping[str, np.ndarray]) -> None:
        """One optimizer step on a batch of pairs."""
        import torch

        if not self.t0:
            self.t0 = time.perf_counter()  # rate from the first batch: startup is not throughput
        series = shift_series(batch["series"], self.config.time_shift, self.augment)
        series = haze_series(series, self.config.haze, self.augment)
        plots = plots_from_series(series).to(self.device, non_blocking=True)
        patches = torch.from_numpy(batch["patch"]).to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr_at(self.step)
        with self.autocast:
            loss = self.model(plots, patches)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.pairs += len(plots) * self.world
        self.losses.append(float(loss.detach()))

    def after_step(self) -> None:
        """The step's line and checkpoint, when they are due."""
        from pimc_ray.models.train_state import unwrap

        c, step = self.config, self.step
        if step % c.log_every == 0 or step == c.steps:
            rate = self.pairs / (time.perf_counter() - self.t0)
            tau = unwrap(self.model).loss.temperature
            self.say(
                f"[pretrain] step {step}/{c.steps}  loss {np.mean(self.losses[-c.log_every :]):.4f}  "
                f"lr {c.lr_at(step - 1):.2e}  tau {tau:.4f}  {rate:.0f} pairs/s"
            )
        if step % c.checkpoint_every == 0 or step == c.steps:
            metrics = {"step": step, "loss": float(np.mean(self.losses[-c.checkpoint_every :]))}
            _report_checkpoint(self.model, self.optimizer, step, metrics, self.rank, self.run_meta)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker body; ``loop_config`` holds ``train`` (a :class:`TrainConfig` dict), ``threads``, the
    checkpoint to resume from and the run's metadata (see :func:`pimc_ray.training.trainer.pretrain`)."""
    import ray.train

    worker = _Worker(loop_config)
    shard = ray.train.get_dataset_shard("train")
    while worker.step < worker.config.steps:
        seen = 0
        for batch in worker.batches(shard):
            seen += 1
            worker.train_step(batch)
            worker.after_step()
            if worker.step >= worker.config.steps:
                break
        if seen == 0:
            raise AllCloudError(
                "the pair stream gave no batch: the training area has no valid pixels, or fewer pairs than "
                f"one batch of {worker.local_batch} per worker; check --aoi and the dates"
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


def _report_checkpoint(
    model: Any, optimizer: Any, step: int, metrics: dict[str, Any], rank: int, run_meta: Mapping[str, Any]
) -> None:
    """Every rank reports (a barrier); rank 0 attaches the training checkpoint."""
    import ray.train

    from pimc_ray.models.train_state import save_training_checkpoint

    name = f"{CHECKPOINT_PREFIX}{step:08d}"
    if rank != 0:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
        return
    with temporary_folder("pimc-ckpt-") as tmp:
        folder = save_training_checkpoint(
            Path(tmp) / "ckpt", model, optimizer, step=step, extra={**run_meta, "loss": metrics["loss"]}
        )
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)), checkpoint_dir_name=name
        )
