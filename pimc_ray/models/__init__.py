"""Models: encoders, heads, losses and their registry. Importing this package imports torch."""

from __future__ import annotations

import torch
from torch import nn

from pimc_ray.models import encoders as _encoders  # noqa: F401  (registers the encoders)
from pimc_ray.models.checkpoint import EncoderConfig, load_checkpoint, save_checkpoint
from pimc_ray.models.contrastive import ProjectionHead, SymmetricInfoNCE, gather_with_grad
from pimc_ray.models.encoders import RPEncoder, RSIEncoder
from pimc_ray.models.heads import LinearClassifier
from pimc_ray.models.pimc import PIMCConfig, PIMCModel
from pimc_ray.models.registry import (
    build,
    build_encoder,
    encoder_class,
    encoder_names,
    names,
    register,
    register_encoder,
)
from pimc_ray.models.train_state import TrainingState, load_training_checkpoint, save_training_checkpoint

__all__ = [
    "EncoderConfig",
    "LinearClassifier",
    "PIMCConfig",
    "PIMCModel",
    "ProjectionHead",
    "RPEncoder",
    "RSIEncoder",
    "SymmetricInfoNCE",
    "TrainingState",
    "build",
    "build_encoder",
    "encoder_class",
    "encoder_names",
    "flops_per_sample",
    "gather_with_grad",
    "load_checkpoint",
    "load_training_checkpoint",
    "names",
    "register",
    "register_encoder",
    "save_checkpoint",
    "save_training_checkpoint",
]


def flops_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Forward FLOPs (2 x multiply-adds) for one sample of ``input_shape`` (without the batch axis)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape)))
    model.train(was_training)
    return float(counter.get_total_flops())
