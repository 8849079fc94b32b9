"""What an encoder costs: forward FLOPs per sample, the figure every model reports (docs/design.md)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["flops_per_sample"]


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Forward FLOPs (2 x multiply-adds) for one sample of ``input_shape`` (without the batch axis)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape)))
    model.train(was_training)
    return float(counter.get_total_flops())
