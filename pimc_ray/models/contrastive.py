"""The contrastive parts of PIMC: projection heads, the cross-rank gather, and the symmetric InfoNCE loss.

PIMC aligns two views of one pixel: its recurrence plots (the RP encoder) and a multispectral image patch around
it (the RSI encoder). Each encoder's embedding goes through its own projection head; the loss pulls the two
projections of the same pixel together and pushes those of different pixels apart, CLIP-style, in both
directions (Radford et al. 2021, eq. in fig. 3; open_clip's ``ClipLoss``)::

    a, b      (n, P) projections of n pairs on this rank, L2-normalised
    A, B      (N, P) the projections of every rank, gathered (N = n x world size)
    logits    s * A @ B.T                         (N, N), s = exp(logit_scale) = 1 / temperature
    loss      ( CE(logits, arange N) + CE(logits.T, arange N) ) / 2

Gathering lets every pair see the negatives of the whole global batch, not only of its rank. The gather keeps
the gradient (:func:`gather_with_grad`): every rank computes the same full loss, the backward pass sums the
gradients of each rank's slice over ranks, and DDP's average of those sums is exactly the gradient of the
global-batch loss (checked against one process in ``tests/models/test_contrastive.py``).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 - torch's convention
from torch import nn

from pimc_ray.models.registry import register

__all__ = [
    "DEFAULT_TEMPERATURE",
    "MAX_LOGIT_SCALE",
    "gather_with_grad",
    "ProjectionHead",
    "SymmetricInfoNCE",
]

#: CLIP's initial temperature; PIMC's paper does not state one (docs/paper-choices.md).
DEFAULT_TEMPERATURE = 0.07
#: CLIP clamps the learnt logit scale at 100 (temperature 0.01) to keep training stable.
MAX_LOGIT_SCALE = 100.0


@register("projection", "mlp")
class ProjectionHead(nn.Module):
    """Two-layer MLP projection (SimCLR's head): ``Linear -> ReLU -> Linear``; ``hidden=0`` makes it linear.

    Args:
        in_dim: encoder embedding size.
        out_dim: size of the space the loss compares projections in.
        hidden: width of the hidden layer (0: a single linear map, as in CLIP).
    """

    def __init__(self, in_dim: int = 64, out_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1 or hidden < 0:
            raise ValueError(f"need in_dim, out_dim >= 1 and hidden >= 0; got {in_dim}, {out_dim}, {hidden}")
        if hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, in_dim) -> (N, out_dim)
        return self.net(x)


def _distributed_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's slice of the gradient summed over ranks."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        rank, world = _distributed_world()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = rank, x.shape[0]  # type: ignore[attr-defined]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)  # sum over ranks (gloo and nccl both have it; reduce_scatter is nccl-only)
        start = ctx.rank * ctx.rows  # type: ignore[attr-defined]
        return total[start : start + ctx.rows]  # type: ignore[attr-defined]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(n, ...)`` per rank -> ``(n x world, ...)``, rank-ordered, with the gradient flowing back to every rank.

    Every rank must pass the same ``n`` (train with ``drop_last``). Without a process group (or with one rank)
    this returns ``x`` itself.
    """
    _, world = _distributed_world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


@register("loss", "symmetric-infonce")
class SymmetricInfoNCE(nn.Module):
    """CLIP's symmetric InfoNCE over the global batch, with a fixed or learnable temperature.

    Args:
        temperature: initial temperature tau (logits are cosine similarities / tau).
        learnable: learn ``log(1 / tau)`` (clamped at :data:`MAX_LOGIT_SCALE`), as CLIP does.
        gather: gather projections across ranks so every pair meets every other pair of the global batch.
    """

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, learnable: bool = False, gather: bool = True
    ) -> None:
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)), requires_grad=learnable)
        self.gather = gather

    @property
    def temperature(self) -> float:
        """The current temperature ``1 / exp(logit_scale)``."""
        return float(1.0 / self.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(N, N)`` scaled cosine similarities of the (gathered) projections; row i = pair i of ``a``."""
        a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)  # (n, P)
        if self.gather:
            a, b = gather_with_grad(a), gather_with_grad(b)  # (N, P)
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * (a @ b.T)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean of the two cross-entropies (a -> b over rows, b -> a over columns) of matching pairs.

        Args:
            a: (n, P) projections of one modality (RP), pair i in row i.
            b: (n, P) projections of the other modality (image patch).
        """
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(
                f"need two (n, P) projections of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
            )
        logits = self.logits(a, b)
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
