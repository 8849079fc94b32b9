"""Models: encoders, projection heads and losses by registry name, classification heads, checkpoints.

- :mod:`~pimc_ray.models.encoders`: the RP encoder ``rp-resnet``, the image-patch encoder ``rsi-cnn`` and the joint
  encoder ``pimc-joint``, with the protocols mapping relies on;
- :mod:`~pimc_ray.models.contrastive`: projection heads and the symmetric InfoNCE loss (with its cross-rank gather);
- :mod:`~pimc_ray.models.pimc`: the two-tower PIMC model and its config;
- :mod:`~pimc_ray.models.heads`: the logistic-regression head on frozen embeddings;
- :mod:`~pimc_ray.models.checkpoint` and :mod:`~pimc_ray.models.train_state`: safetensors + JSON, never pickle;
- :mod:`~pimc_ray.models.registry` and :mod:`~pimc_ray.models.flops`: models by name, and what they cost.

Models know tensors, not catalogs or rasters. Importing this package imports torch.
"""

from __future__ import annotations

from pimc_ray.models import encoders as _encoders  # noqa: F401  (registers the encoders)
from pimc_ray.models.checkpoint import EncoderConfig, EncoderRef, load_checkpoint, save_checkpoint
from pimc_ray.models.contrastive import ProjectionHead, SymmetricInfoNCE, gather_with_grad
from pimc_ray.models.encoders import JointEncoder, PatchEncoder, PlotEncoder, RPEncoder, RSIEncoder, parts
from pimc_ray.models.flops import flops_per_sample
from pimc_ray.models.heads import Head, LinearClassifier, LinearForecaster, LinearRegressor
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
    "EncoderRef",
    "Head",
    "JointEncoder",
    "LinearClassifier",
    "LinearForecaster",
    "LinearRegressor",
    "PIMCConfig",
    "PIMCModel",
    "PatchEncoder",
    "PlotEncoder",
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
    "parts",
    "register",
    "register_encoder",
    "save_checkpoint",
    "save_training_checkpoint",
]
