"""The encoders a downstream task scores, and the inputs they take.

A task scores one PIMC tower: the recurrence-plot (RP) encoder for PASTIS, the image-patch (RSI) encoder for
EuroSAT. :func:`encoder_variants` gives that tower randomly initialised (always) and, with a checkpoint, as
pretrained; the checkpoint may be any pimc-ray encoder checkpoint that holds the tower (a pretraining export's
root, ``rp/``, ``rsi/`` or ``joint/``) or a training checkpoint. :class:`PlotInputs` turns index series into the
RP encoder's plots with the project's kernel, on the GPU through CuPy when the task runs on CUDA, and
:class:`PatchGridEncoder` lets the RSI encoder, pretrained on ``k x k`` patches, embed a whole image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pimc_ray.errors import CheckpointError
from pimc_ray.kernels.recurrence import rp_batch
from pimc_ray.kernels.xp import cupy_available, import_cupy, to_torch
from pimc_ray.models.checkpoint import EncoderConfig, EncoderRef, read_meta
from pimc_ray.models.encoders import parts
from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS

logger = logging.getLogger(__name__)

__all__ = ["EncoderVariant", "PatchGridEncoder", "PlotInputs", "Tower", "encoder_variants"]

Tower = Literal["plots", "patches"]
"""Which tower a task scores: the RP encoder (``plots``) or the image-patch encoder (``patches``)."""

_TOWER_NAMES: Mapping[str, str] = {"plots": "RP encoder", "patches": "RSI encoder"}


@dataclass
class EncoderVariant:
    """One encoder a task scores."""

    name: Literal["random-init", "pretrained"]
    encoder: nn.Module
    """The tower, in eval mode (tasks copy it before fine-tuning)."""
    weights: str
    """Where its weights come from: ``random-init (seed N)`` or ``<checkpoint> sha256:<hash>``."""

    @property
    def label(self) -> str:
        """``random-init RP encoder`` and the like, for report rows."""
        inputs = str(getattr(self.encoder, "inputs", "plots"))
        return f"{self.name} {_TOWER_NAMES.get(inputs, 'encoder')}"


def _default_config(tower: Tower, seed: int) -> EncoderConfig:
    if tower == "plots":
        return EncoderConfig(seed=seed)
    return EncoderConfig(name="rsi-cnn", params=dict(DEFAULT_RSI_PARAMS), seed=seed)


def _part_configs(config: EncoderConfig) -> list[EncoderConfig]:
    """The configs of an encoder's single-input parts, in :func:`~pimc_ray.models.encoders.parts` order."""
    params = config.params
    specs: list[Mapping[str, Any]]
    if "parts" in params:  # pimc-concat
        specs = list(params["parts"])
    elif "rp" in params and "rsi" in params:  # pimc-joint
        specs = [params["rp"], params["rsi"]]
    else:
        return [config]
    return [EncoderConfig(name=str(s["name"]), params=dict(s.get("params", {}))) for s in specs]


def _pretrained(checkpoint: str, tower: Tower) -> tuple[nn.Module, EncoderConfig, str]:
    """``(tower in eval mode, its config, label of its weights)`` from a checkpoint folder or URI.

    Raises:
        CheckpointError: unreadable, or it holds no encoder of that tower.
    """
    meta = read_meta(checkpoint)
    if meta.get("kind") == "pimc-training":  # both towers: the RP encoder, and the rest in pimc.safetensors
        from pimc_ray.models.train_state import load_training_checkpoint

        model = load_training_checkpoint(checkpoint).model
        module = model.rp if tower == "plots" else model.rsi
        config = model.config.rp if tower == "plots" else model.config.rsi
        return module.eval(), config, f"{checkpoint} (training checkpoint, step {meta.get('step')})"
    ref = EncoderRef.open(checkpoint)
    loaded, weights = ref.load()
    towers, configs = parts(loaded), _part_configs(ref.config)
    for module, config in zip(towers, configs, strict=False):
        if getattr(module, "inputs", None) == tower:
            return module.eval(), config, f"{checkpoint} {weights.removeprefix('checkpoint ')}"
    held = ", ".join(str(getattr(m, "inputs", "?")) for m in towers)
    raise CheckpointError(
        f"checkpoint {checkpoint} holds no {_TOWER_NAMES[tower]} (its encoder {ref.config.describe()} takes {held}); "
        f"pass a pretraining export's root, its {'rp/' if tower == 'plots' else 'rsi/'} or joint/ folder, or a "
        "training checkpoint"
    )


def encoder_variants(checkpoint: str | None, tower: Tower, *, seed: int = 0) -> list[EncoderVariant]:
    """The tower randomly initialised (seeded; the checkpoint's architecture when one is given), then, with a
    checkpoint, the pretrained tower.

    Raises:
        CheckpointError: the checkpoint is unreadable or holds no such tower.
        StorageError: its store cannot be reached.
    """
    if checkpoint is None:
        config = _default_config(tower, seed)
        return [EncoderVariant("random-init", config.build().eval(), f"random-init (seed {seed})")]
    module, config, weights = _pretrained(checkpoint, tower)
    random = EncoderConfig(name=config.name, params=dict(config.params), seed=seed).build().eval()
    logger.debug("scoring %s from %s and its random initialisation", config.describe(), checkpoint)
    return [
        EncoderVariant("random-init", random, f"random-init (seed {seed})"),
        EncoderVariant("pretrained", module, weights),
    ]


class PlotInputs:
    """Recurrence plots ``(n, 3, T, T)`` of index series ``(n, 3, T)`` on a torch device, built by
    :func:`pimc_ray.kernels.recurrence.rp_batch` (unthresholded, unnormalised: what the encoder was pretrained on).

    On ``cuda`` with CuPy installed the plots are built on the GPU (the fused kernel) and reach torch without a
    copy; otherwise NumPy builds them and they are copied to the device.
    """

    def __init__(self, series: np.ndarray, device: str) -> None:
        self.series = series
        self.device = torch.device(device)
        self._xp: Any = import_cupy() if self.device.type == "cuda" and cupy_available() else np

    def __len__(self) -> int:
        return len(self.series)

    def __call__(self, index: np.ndarray) -> torch.Tensor:
        batch = self._xp.asarray(self.series[index])  # (n, 3, T)
        return to_torch(rp_batch(batch)).to(self.device)  # (n, 3, T, T)


class ImageInputs:
    """Images ``(n, B, H, W)`` of uint16 reflectance x ``scale`` as float32 reflectance on a torch device."""

    def __init__(self, images: np.ndarray, device: str, *, scale: float = 10_000.0) -> None:
        self.images = images
        self.device = torch.device(device)
        self.scale = scale

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, index: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(self.images[index].astype(np.float32))
        return (batch / self.scale).to(self.device)


class PatchGridEncoder(nn.Module):
    """An image-patch encoder over whole images: the mean of its embeddings of the image's ``k x k`` tiles.

    The RSI encoder is pretrained on ``k x k`` patches (9 x 9 by default) centred on a pixel; an image of
    ``H x W`` is cut into the ``(H // k) x (W // k)`` non-overlapping tiles of a grid anchored at its top-left
    corner (a 64 x 64 EuroSAT image: 7 x 7 tiles covering 63 x 63 px), every tile embedded, and the embeddings
    averaged.

    Args:
        encoder: an image-patch encoder (``inputs == "patches"``, ``patch_size`` k).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.k = int(getattr(encoder, "patch_size", 2 * int(getattr(encoder, "halo", 4)) + 1))
        self.embed_dim = int(getattr(encoder, "embed_dim", 0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images (n, B, H, W) -> tiles (n * P, B, k, k) -> embeddings (n, P, D) -> mean (n, D)
        n, bands, height, width = images.shape
        k = self.k
        if height < k or width < k:
            raise ValueError(
                f"images of {height} x {width} px are smaller than the encoder's {k} x {k} patches"
            )
        tiles = images[:, :, : height // k * k, : width // k * k].unfold(2, k, k).unfold(3, k, k)
        tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, bands, k, k)  # (n * P, B, k, k)
        embeddings = self.encoder(tiles)
        return embeddings.reshape(n, -1, embeddings.shape[-1]).mean(dim=1)
