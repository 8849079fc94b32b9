"""What a pretraining run is: the optimisation (:class:`TrainConfig`), and where and how wide it runs
(:class:`RunSpec`)."""

from __future__ import annotations

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
