"""Heads on frozen features (linear probes) and end-to-end fine-tuning of an encoder with its head.

* classification probe: :class:`~pimc_ray.models.heads.LinearClassifier`, the project's head (standardised
  features, multinomial logistic regression by L-BFGS from zero weights, L2 1e-3);
* regression probe: :class:`~pimc_ray.models.heads.LinearRegressor`, standardised features and ridge regression
  solved in closed form;
* :func:`fine_tune`: encoder and head trained together from the probe's head (LP-FT, Kumar et al. 2022, "Fine-Tuning
  can Distort Pretrained Features and Underperform Out-of-Distribution"), AdamW with a cosine schedule.

Inputs reach an encoder through a :data:`Inputs` callable: sample indices -> the encoder's input batch on the
device (plots built from series, images scaled to reflectance), so nothing but the batch is ever expanded.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from pimc_ray.models.heads import LinearRegressor
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_SAMPLES",
    "Inputs",
    "LinearRegressor",
    "ProbeHead",
    "TrainOptions",
    "TunedHead",
    "calibrate_batch_norm",
    "embed",
    "fine_tune",
    "predict",
]

Inputs = Callable[[np.ndarray], torch.Tensor]
"""Sample indices ``(n,)`` -> the encoder's input batch on the task's device."""


@dataclass(frozen=True)
class TrainOptions:
    """How heads are fit and encoders fine-tuned."""

    epochs: int = 5
    """Passes over the training set when fine-tuning; 0 scores linear probes only."""
    batch_size: int = 512
    """Samples per step (and per forward pass when embedding)."""
    lr: float = 1e-4
    """AdamW's peak learning rate when fine-tuning (encoder and head alike), cosine-decayed to 0."""
    weight_decay: float = 1e-4
    """AdamW's weight decay when fine-tuning."""
    l2: float = 1e-3
    """L2 penalty of the linear probes."""
    seed: int = 0
    """Seed of the fine-tuning batches' order (and of torch's RNG)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where encoders run."""

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"--epochs must be 0 or more, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"--batch-size must be at least 2, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here; run with --device cpu")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batches(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs, n: int, options: TrainOptions) -> np.ndarray:
    """``(n, ...)`` float32 outputs of ``model`` (in eval mode, on ``options.device``) on the ``n`` samples of
    ``inputs``, ``options.batch_size`` at a time."""
    model.eval().to(options.device)
    out = [model(inputs(index)).float().cpu() for index in _batches(n, options.batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0,), dtype=np.float32)


def embed(encoder: nn.Module, inputs: Inputs, n: int, options: TrainOptions) -> np.ndarray:
    """``(n, D)`` float32 embeddings of a frozen encoder (eval mode)."""
    return predict(encoder, inputs, n, options)


#: Samples a random-init encoder's batch-norm statistics are estimated on (:func:`calibrate_batch_norm`).
CALIBRATION_SAMPLES = 2048


@torch.no_grad()
def calibrate_batch_norm(
    encoder: nn.Module, inputs: Inputs, n: int, options: TrainOptions, *, samples: int = CALIBRATION_SAMPLES
) -> nn.Module:
    """A copy of ``encoder`` whose batch-norm running statistics are those of up to ``samples`` of the ``n``
    samples of ``inputs`` (drawn with ``options.seed``); no weight changes.

    A freshly initialised network's batch norms hold mean 0 and variance 1, so in eval mode they leave their
    inputs as they come: reflectances of about 0.1 pass unscaled and the embedding varies by 1e-4 from sample to
    sample. With statistics of the data, the random-init encoder normalises as a trained one does (whose
    statistics come from pretraining), which is the baseline a pretrained encoder should be compared with.
    """
    calibrated = copy.deepcopy(encoder).to(options.device)
    norms = [m for m in calibrated.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    calibrated.train()
    for index in _steps(np.random.default_rng(options.seed).permutation(n)[:samples], options.batch_size):
        calibrated(inputs(index))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return calibrated.eval()


class ProbeHead(Protocol):
    """A linear probe: standardisation buffers of the features it was fit on, then one linear layer."""

    mean: torch.Tensor
    std: torch.Tensor
    linear: nn.Linear


class TunedHead(nn.Module):
    """A probe's linear layer behind a feature standardisation that follows the encoder while it is fine-tuned.

    In training mode features are standardised with the batch's statistics (a batch norm without scale and
    shift), so however far fine-tuning moves an encoder's features, the linear layer sees standardised inputs;
    in eval mode with the statistics :func:`fine_tune` recomputes over the training set once training ends. It
    starts as the probe: the probe's linear layer, and its statistics.
    """

    def __init__(self, probe: ProbeHead) -> None:
        super().__init__()
        dim = int(probe.mean.shape[0])
        # eps far below the variance of any feature: some embedding dims vary by 1e-4 (a random-init encoder's)
        self.norm = nn.BatchNorm1d(dim, eps=1e-12, momentum=None, affine=False)
        mean, var = self.norm.running_mean, self.norm.running_var
        assert mean is not None and var is not None  # track_running_stats is on
        with torch.no_grad():
            mean.copy_(probe.mean)
            var.copy_(probe.std.square())
        self.linear = copy.deepcopy(probe.linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, dim) -> (N, out)
        return self.linear(self.norm(x))


def _steps(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Sorted batches of ``order``; a last batch of one sample joins the one before (batch norm needs two)."""
    batches = [np.sort(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.sort(np.concatenate(batches[-2:]))]
    return batches


def fine_tune(
    encoder: nn.Module,
    probe: ProbeHead,
    inputs: Inputs,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    options: TrainOptions,
    name: str,
    progress: Progress | None = None,
) -> nn.Module:
    """``nn.Sequential(encoder, TunedHead(probe))`` trained end to end on the samples of ``inputs``; returns it in
    eval mode.

    A copy of ``encoder`` and a :class:`TunedHead` started from the probe (LP-FT) are trained; the originals are
    untouched. Each of ``options.epochs`` passes visits the samples in a seeded random order in batches of
    ``options.batch_size``; AdamW at ``options.lr``, cosine-decayed to 0 over all steps. The encoder's batch-norm
    layers keep their running statistics (eval mode; their scale and shift train): batch statistics would move
    every feature of a randomly initialised encoder, whose running statistics are 0 and 1, at the first step,
    and a few hundred steps are too few for running statistics to settle. Training ends with one pass over the
    training samples that sets the head's standardisation to the mean and variance of the tuned encoder's
    features, as the probe's are those of the frozen encoder's.

    Args:
        encoder: the encoder to fine-tune.
        probe: its linear probe (:class:`LinearRegressor` or :class:`~pimc_ray.models.heads.LinearClassifier`).
        inputs: sample indices -> encoder input batch on ``options.device``.
        targets: ``(N, ...)`` what ``loss_fn(model output, targets[batch])`` compares with.
        loss_fn: the training loss.
        options: epochs, batch size, learning rate, weight decay, seed, device.
        name: what is fine-tuned, for progress lines.
        progress: receives one line per epoch.
    """
    head = TunedHead(probe)
    model = nn.Sequential(copy.deepcopy(encoder), head).to(options.device)
    targets = targets.to(options.device)
    n = len(targets)
    rng = np.random.default_rng(options.seed)
    total = max(1, len(_steps(np.arange(n), options.batch_size)) * options.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / total))  # noqa: E731
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    meter = Meter(options.epochs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        for epoch in range(1, options.epochs + 1):
            model.eval()  # the encoder's batch norms keep their statistics
            head.train()
            losses = []
            for index in _steps(rng.permutation(n), options.batch_size):
                loss = loss_fn(model(inputs(index)), targets[torch.as_tensor(index, device=targets.device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
            mean_loss = float(np.mean(losses)) if losses else float("nan")
            logger.debug("fine-tune %s: epoch %d, loss %.5f", name, epoch, mean_loss)
            if progress is not None:
                progress(
                    f"  fine-tune {name}: epoch {epoch}/{options.epochs}, loss {mean_loss:.4f}  "
                    + meter.times(epoch)
                )
    model.eval()
    with torch.no_grad():  # the head's standardisation: the tuned encoder's features of every training sample
        features = torch.cat([model[0](inputs(index)).float() for index in _batches(n, options.batch_size)])
        mean, var = head.norm.running_mean, head.norm.running_var
        assert mean is not None and var is not None
        mean.copy_(features.mean(0))
        var.copy_(features.var(0).clamp_min(1e-12))  # the sample variance, as the probes standardise
    return model
