"""PIMC's two-tower model: RP encoder + RSI encoder, a projection head each, and the contrastive loss.

::

    plots   (n, 3, T, T)  --rp encoder-->  (n, D)  --rp projection-->   (n, P) --.
                                                                                  +--> symmetric InfoNCE -> loss
    patches (n, B, k, k)  --rsi encoder--> (n, D') --rsi projection-->  (n, P) --'

:class:`PIMCConfig` names every part (registry names and keyword parameters), so a training checkpoint holds a
JSON config and safetensors weights, never a pickled model. After pretraining both encoders are exported for
mapping (:func:`pimc_ray.training.trainer.export_encoder`): the RP encoder (``PIMCConfig.rp``) and the RSI encoder
(``PIMCConfig.rsi``), which maps from windows read grown by its halo (half a patch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pimc_ray.errors import InvalidConfigError
from pimc_ray.models import contrastive as _contrastive  # noqa: F401  (registers the projection and the loss)
from pimc_ray.models.checkpoint import EncoderConfig
from pimc_ray.models.registry import build

__all__ = [
    "DEFAULT_RSI_PARAMS",
    "PIMCConfig",
    "PIMCModel",
]

#: The RSI encoder's defaults: ten bands, a 9 x 9 patch (90 m) at 10 m, about 10.5 MFLOP per patch.
DEFAULT_RSI_PARAMS: Mapping[str, Any] = {
    "in_channels": 10,
    "patch_size": 9,
    "widths": [32, 64, 128],
    "blocks": 1,
    "embed_dim": 64,
}


def _default_projection() -> dict[str, Any]:
    return {"name": "mlp", "params": {"out_dim": 64, "hidden": 128}}


def _default_loss() -> dict[str, Any]:
    return {"name": "symmetric-infonce", "params": {"temperature": 0.07, "learnable": True}}


@dataclass(frozen=True)
class PIMCConfig:
    """Every part of a PIMC model, by registry name and parameters (JSON-serialisable)."""

    rp: EncoderConfig = field(default_factory=EncoderConfig)
    """The RP encoder (what the embedding job maps with by default after pretraining)."""
    rsi: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(name="rsi-cnn", params=DEFAULT_RSI_PARAMS)
    )
    """The image-patch encoder (exported to ``<out>/rsi``; the embedding job can map with it too)."""
    projection: Mapping[str, Any] = field(default_factory=_default_projection)
    """``{"name": ..., "params": {...}}`` of both projection heads (``in_dim`` comes from each encoder)."""
    loss: Mapping[str, Any] = field(default_factory=_default_loss)
    """``{"name": ..., "params": {...}}`` of the contrastive loss."""
    seed: int = 0
    """Seed of the projection heads' initialisation (each encoder has its own in its config)."""

    def __post_init__(self) -> None:
        # checked where the config is made (the driver, before any worker starts), not in every worker's loss
        temperature = self.loss.get("params", {}).get("temperature")
        if temperature is not None and not float(temperature) > 0:
            raise InvalidConfigError(
                f"the loss's temperature must be above 0 (--temperature), got {temperature}: logits are "
                "similarities divided by it"
            )

    @property
    def patch_size(self) -> int:
        """Side of the image patches the RSI encoder takes."""
        return int(self.rsi.params.get("patch_size", DEFAULT_RSI_PARAMS["patch_size"]))

    @property
    def patch_bands(self) -> int:
        """Spectral bands of the image patches."""
        return int(self.rsi.params.get("in_channels", DEFAULT_RSI_PARAMS["in_channels"]))

    def build(self) -> PIMCModel:
        """A freshly initialised model (deterministic for the configured seeds)."""
        return PIMCModel(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rp": self.rp.to_dict(),
            "rsi": self.rsi.to_dict(),
            "projection": {
                "name": self.projection["name"],
                "params": dict(self.projection.get("params", {})),
            },
            "loss": {"name": self.loss["name"], "params": dict(self.loss.get("params", {}))},
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PIMCConfig:
        return cls(
            rp=EncoderConfig.from_dict(data["rp"]),
            rsi=EncoderConfig.from_dict(data["rsi"]),
            projection={
                "name": data["projection"]["name"],
                "params": dict(data["projection"].get("params", {})),
            },
            loss={"name": data["loss"]["name"], "params": dict(data["loss"].get("params", {}))},
            seed=int(data.get("seed", 0)),
        )


class PIMCModel(nn.Module):
    """The two encoders, their projection heads and the loss; ``forward`` returns the loss of a batch of pairs.

    The loss (with its temperature) is a submodule, so DDP synchronises a learnable temperature like any weight,
    and the cross-rank gather runs inside ``forward``.
    """

    def __init__(self, config: PIMCConfig) -> None:
        super().__init__()
        self.config = config
        self.rp = config.rp.build()
        self.rsi = config.rsi.build()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            params = dict(config.projection.get("params", {}))
            self.rp_proj = build(
                "projection", config.projection["name"], {"in_dim": self.rp.embed_dim, **params}
            )
            self.rsi_proj = build(
                "projection", config.projection["name"], {"in_dim": self.rsi.embed_dim, **params}
            )
            self.loss = build("loss", config.loss["name"], config.loss.get("params", {}))

    def project(self, plots: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections ``((n, P), (n, P))`` of plots ``(n, 3, T, T)`` and patches ``(n, B, k, k)``."""
        return self.rp_proj(self.rp(plots)), self.rsi_proj(self.rsi(patches))

    def forward(self, plots: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Contrastive loss (a scalar) of ``n`` pairs: plot i and patch i come from the same pixel."""
        a, b = self.project(plots, patches)
        return self.loss(a, b)
