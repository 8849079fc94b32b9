"""What a pretraining run is: the optimisation (:class:`TrainConfig`), and where and how wide it runs
(:class:`RunSpec`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pimc_ray.models.pimc import PIMCConfig

__all__ = ["RunSpec", "TrainConfig"]


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
    haze: float = 0.0
    """Augmentation: each step of each pair's series is hazed with this probability before its plots are built:
    a residual aerosol path reflectance that brightens blue most (``a * (1, 0.62, 0.42)`` added to blue, red
    and NIR, the ground dimmed by ``2 a``, ``a`` up to 0.05), what atmospheric correction and SCL leave in on
    real dates, so that the RP encoder does not learn the haze of one place and date as a feature of it."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if (
            min(self.weight_decay, self.warmup_steps, self.shuffle_buffer, self.time_shift) < 0
            or self.lr <= 0
            or not 0.0 <= self.haze <= 1.0
        ):
            raise ValueError(
                "lr must be positive; weight_decay, warmup_steps, shuffle_buffer and time_shift non-negative; "
                "haze a probability"
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
    cpus_per_worker: float | None = None
    """CPUs each worker reserves; None fits the cluster: what the pair readers leave, shared by the workers, at
    most 1 each (0.5 x 2 workers beside one 1-CPU reader on 2 cores). See :meth:`fitted`."""
    readers: int = 1
    """Ray Data actors reading pair windows."""
    reader_cpus: float = 1.0
    """CPUs each pair reader reserves."""
    wait_for_resources: bool = False
    """Start even when the cluster cannot place every worker and reader now (it autoscales); else refuse."""
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
        if (self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or self.reader_cpus <= 0:
            raise ValueError("cpus_per_worker and reader_cpus must be positive")

    def fitted(self, cluster_cpus: float) -> RunSpec:
        """This spec with ``cpus_per_worker`` chosen for a cluster of ``cluster_cpus`` CPUs when it is None: the
        CPUs the readers leave, split over the workers, at most 1 and at least 0.1 each (rounded down to 0.05)."""
        if self.cpus_per_worker is not None:
            return self
        spare = (cluster_cpus - self.readers * self.reader_cpus) / self.workers
        return dataclasses.replace(self, cpus_per_worker=max(0.1, min(1.0, math.floor(spare * 20) / 20)))

    @property
    def cpus(self) -> float:
        """CPUs the run reserves: its workers' and its readers'."""
        return self.workers * (self.cpus_per_worker or 0.0) + self.readers * self.reader_cpus
