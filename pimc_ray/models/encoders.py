"""Encoders: the recurrence-plot (RP) encoder and the image-patch (RSI) encoder of PIMC.

Shapes:

* ``rp-resnet``: (N, 3, T, T) float32 recurrence plots (NDVI, EVI, SAVI channels) -> (N, embed_dim) float32.
* ``rsi-cnn``: (N, bands, k, k) float32 surface reflectance of a patch centred on the pixel (all ten
  Sentinel-2 bands B02..B12 by default) -> (N, embed_dim) float32.
* ``pimc-joint``: both towers of one pretraining run side by side: plots (N, 3, T, T) and patches
  (N, bands, k, k) of the same pixels -> (N, rp dim + rsi dim), the two embeddings concatenated.

Both report their cost with :func:`pimc_ray.models.flops_per_sample` (tests/models pins the defaults).

Spatial context: every encoder declares what it sees of a pixel (``inputs``: ``"plots"``, ``"patches"`` or both) and
how many pixels of context it needs on each side of it (``halo``): 0 for ``rp-resnet``, which sees the pixel's own
series only, and ``patch_size // 2`` for ``rsi-cnn``, whose patch is centred on the pixel. The mapping job reads
every window grown by the halo (:func:`pimc_ray.mapping.embedder.series_reader`), so a pixel at a tile or window
edge gets the same context as one inside it; :class:`~pimc_ray.models.checkpoint.EncoderConfig` reports both for
a config. ``pimc-joint`` sees both, with the image-patch encoder's halo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from pimc_ray.models.registry import build_encoder, register_encoder

__all__ = [
    "EncoderInputs",
    "JointEncoder",
    "PatchEncoder",
    "PlotEncoder",
    "ConcatEncoder",
    "IndexSeries",
    "RPEncoder",
    "RSIEncoder",
    "SeriesEncoder",
    "parts",
]

#: What an encoder sees of a pixel: its recurrence plots (N, 3, T, T), its index series (N, 3, T), an image patch
#: around it (N, B, k, k), or several of these (a joint encoder: ``forward`` takes one tensor per part).
EncoderInputs = Literal["plots", "series", "patches", "plots+patches", "series+plots", "series+plots+patches"]


class PlotEncoder(Protocol):
    """An encoder of recurrence plots: ``(N, 3, T, T)`` -> ``(N, embed_dim)`` (``rp-resnet``)."""

    inputs: Literal["plots"]
    embed_dim: int
    halo: int
    """0: a pixel's plots come from its own series."""

    def __call__(self, plots: torch.Tensor) -> torch.Tensor: ...


class SeriesEncoder(Protocol):
    """An encoder of index series: ``(N, 3, T)`` NDVI, EVI, SAVI -> ``(N, embed_dim)`` (``index-series``)."""

    inputs: Literal["series"]
    embed_dim: int
    halo: int
    """0: a pixel's series are its own."""

    def __call__(self, series: torch.Tensor) -> torch.Tensor: ...


class PatchEncoder(Protocol):
    """An encoder of image patches: ``(N, in_channels, k, k)`` -> ``(N, embed_dim)`` (``rsi-cnn``)."""

    inputs: Literal["patches"]
    embed_dim: int
    halo: int
    """``k // 2``: pixels of context on each side of the pixel."""
    in_channels: int

    def __call__(self, patches: torch.Tensor) -> torch.Tensor: ...


def parts(encoder: nn.Module) -> tuple[Any, ...]:
    """The single-input encoders an encoder is made of, in the order of its embedding's dimensions: the two
    towers of a joint encoder, else the encoder itself."""
    return tuple(getattr(encoder, "parts", (encoder,)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def _stem_and_stages(
    in_channels: int, widths: Sequence[int], blocks: int, *, stem_stride: int
) -> tuple[nn.Sequential, nn.Sequential]:
    """A 3x3 conv-BN-ReLU stem to ``widths[0]``, then one stage of ``blocks`` basic blocks per width, every
    stage after the first halving the resolution."""
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    )
    layers: list[nn.Module] = []
    c_in = widths[0]
    for i, width in enumerate(widths):
        for b in range(blocks):
            layers.append(BasicBlock(c_in, width, stride=2 if (i > 0 and b == 0) else 1))
            c_in = width
    return stem, nn.Sequential(*layers)


@register_encoder("rp-resnet")
class RPEncoder(nn.Module):
    """ResNet-style CNN adapted to small recurrence plots.

    A stride-2 3x3 stem (T x T -> T/2), then one stage per entry of ``widths``, each of ``blocks`` basic blocks,
    every stage after the first halving the resolution; global average pooling and a linear layer to
    ``embed_dim``. With the defaults (widths 16-32-64, one block each) a 3 x 36 x 36 plot costs about
    8.5 MFLOP (see :func:`pimc_ray.models.flops_per_sample`), with widths 32-64-128 about 33 MFLOP, both inside
    the ~50 MFLOP per pixel budget of docs/design.md. An ImageNet ResNet-18 at 224 x 224 would cost 1.8 GFLOP.

    Args:
        in_channels: plot channels (3: NDVI, EVI, SAVI).
        widths: channels of each stage.
        blocks: basic blocks per stage.
        embed_dim: size of the output embedding.
    """

    inputs: ClassVar[EncoderInputs] = "plots"
    halo: int = 0
    """Pixels of context needed on each side of a pixel: none, a pixel's plots come from its own series."""

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        if not widths or blocks < 1 or embed_dim < 1:
            raise ValueError(
                f"need widths, blocks >= 1 and embed_dim >= 1; got {widths}, {blocks}, {embed_dim}"
            )
        self.stem, self.stages = _stem_and_stages(in_channels, widths, blocks, stem_stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, T, T) -> (N, embed_dim)
        h = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(h), 1))


@register_encoder("rsi-cnn")
class RSIEncoder(nn.Module):
    """Small CNN over a multispectral patch around a pixel: PIMC's remote-sensing-image (RSI) branch.

    A learnt per-band standardisation (batch norm on the input: reflectances differ by an order of magnitude
    between bands), a stride-1 3x3 stem that keeps the patch's resolution, then one stage per entry of
    ``widths`` (``blocks`` basic blocks each; every stage after the first halves the resolution). The output
    concatenates the global average of the last feature map with its centre cell, so the embedding describes
    both the pixel's neighbourhood and the pixel itself, then a linear layer maps it to ``embed_dim``. With the
    defaults (10 bands, 9 x 9 patch, widths 32-64-128) a patch costs about 10.5 MFLOP.

    Args:
        in_channels: spectral bands of the patch (10: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12).
        patch_size: side k of the square patch in pixels (odd: the pixel is the centre).
        widths: channels of each stage.
        blocks: basic blocks per stage.
        embed_dim: size of the output embedding.
    """

    inputs: ClassVar[EncoderInputs] = "patches"

    def __init__(
        self,
        in_channels: int = 10,
        patch_size: int = 9,
        widths: Sequence[int] = (32, 64, 128),
        blocks: int = 1,
        embed_dim: int = 64,
    ) -> None:
        super().__init__()
        if not widths or blocks < 1 or embed_dim < 1 or in_channels < 1:
            raise ValueError(
                f"need widths, blocks >= 1, embed_dim >= 1 and in_channels >= 1; got {widths}, {blocks}, "
                f"{embed_dim}, {in_channels}"
            )
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(
                f"patch_size must be odd and positive (the pixel is the centre), got {patch_size}"
            )
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.halo = patch_size // 2
        """Pixels of context needed on each side of a pixel: the patch centred on it reaches ``k // 2`` out."""
        self.norm = nn.BatchNorm2d(in_channels)
        self.stem, self.stages = _stem_and_stages(in_channels, widths, blocks, stem_stride=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * widths[-1], embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, bands, k, k) -> (N, embed_dim)
        if x.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(
                f"expected {self.patch_size} x {self.patch_size} patches, got {tuple(x.shape[-2:])}; "
                "build the encoder with the patch size the pairs were sampled with"
            )
        h = self.stages(self.stem(self.norm(x)))  # (N, C, k', k')
        centre = h[:, :, h.shape[-2] // 2, h.shape[-1] // 2]  # (N, C)
        return self.fc(torch.cat([torch.flatten(self.pool(h), 1), centre], dim=1))


@register_encoder("pimc-joint")
class JointEncoder(nn.Module):
    """Both PIMC towers of one pretraining run, side by side: a pixel's embedding is its RP embedding followed by
    its image-patch embedding.

    Contrastive pretraining puts the two in one space but each keeps what only it sees: the RP encoder the
    pixel's dynamics (its plots drop the index level and see three indices only), the image-patch encoder the
    spectrum of all ten bands and the neighbourhood. ``train.export_encoder`` writes this encoder to
    ``<out>/joint``; the mapping job reads its windows grown by the patch halo, with all ten bands.

    Args:
        rp: ``{"name", "params"}`` of the plot encoder (an ``inputs = "plots"`` encoder, e.g. ``rp-resnet``).
        rsi: ``{"name", "params"}`` of the image-patch encoder (``inputs = "patches"``, e.g. ``rsi-cnn``).
    """

    inputs: ClassVar[EncoderInputs] = "plots+patches"

    def __init__(self, rp: Mapping[str, Any], rsi: Mapping[str, Any]) -> None:
        super().__init__()
        self.rp = build_encoder(rp["name"], rp.get("params", {}))
        self.rsi = build_encoder(rsi["name"], rsi.get("params", {}))
        if self.rp.inputs != "plots" or self.rsi.inputs != "patches":
            raise ValueError(
                f"pimc-joint takes a plot encoder and an image-patch encoder, got {rp['name']!r} "
                f"({self.rp.inputs}) and {rsi['name']!r} ({self.rsi.inputs})"
            )
        self.parts = (self.rp, self.rsi)
        """The towers, in the order of the embedding's dimensions (see :func:`parts`)."""
        self.halo = int(self.rsi.halo)
        """Pixels of context on each side of a pixel: the image-patch encoder's."""
        self.in_channels = int(self.rsi.in_channels)
        self.embed_dim = int(self.rp.embed_dim) + int(self.rsi.embed_dim)

    def forward(self, plots: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        # plots (N, 3, T, T), patches (N, bands, k, k) of the same N pixels -> (N, rp dim + rsi dim)
        return torch.cat([self.rp(plots), self.rsi(patches)], dim=1)


@register_encoder("index-series")
class IndexSeries(nn.Module):
    """A pixel's regular-grid index series as its embedding: ``(N, 3, T)`` NDVI, EVI, SAVI -> ``(N, 3 T)``.

    No weights and no cost: what the series hold, level and timing included, which recurrence plots drop (they
    hold distances between dates only). Beside a pretrained RP encoder (``pimc-concat``) it makes the
    default embedding (with the image-patch encoder too) of docs/learning-check.md.

    Args:
        steps: time steps T of the series it takes.
    """

    inputs: ClassVar[EncoderInputs] = "series"
    halo: int = 0

    def __init__(self, steps: int = 36) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.steps = steps
        self.embed_dim = 3 * steps

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        # series: (N, 3, T) -> (N, 3 T), index-major (NDVI at every step, then EVI, then SAVI)
        if series.shape[1:] != (3, self.steps):
            raise ValueError(f"expected (N, 3, {self.steps}) index series, got {tuple(series.shape)}")
        return series.flatten(1)


@register_encoder("pimc-concat")
class ConcatEncoder(nn.Module):
    """Single-input encoders side by side: a pixel's embedding is theirs concatenated, in ``parts`` order.

    The default export of pretraining is ``index-series``, then the pretrained ``rp-resnet`` and ``rsi-cnn``:
    what the series hold, what the plots' encoder learnt of their shape and what the patch encoder learnt of the
    pixel's surroundings. Mapping embeds each part from the input it declares (:func:`parts`).

    Args:
        parts: ``[{"name", "params"}, ...]`` of single-input encoders (``inputs`` plots, series or patches).
    """

    def __init__(self, parts: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("pimc-concat needs at least one part")
        built = [build_encoder(p["name"], p.get("params", {})) for p in parts]
        for spec, part in zip(parts, built, strict=True):
            if "+" in str(part.inputs):
                raise ValueError(
                    f"pimc-concat takes single-input encoders, got {spec['name']!r} ({part.inputs})"
                )
        self.towers = nn.ModuleList(built)
        self.parts = tuple(built)
        """The towers, in the order of the embedding's dimensions (see :func:`parts`)."""
        self.inputs = "+".join(str(part.inputs) for part in built)
        self.halo = max(int(part.halo) for part in built)
        self.embed_dim = sum(int(part.embed_dim) for part in built)
        patch_parts = [part for part in built if part.inputs == "patches"]
        if patch_parts:
            self.in_channels = int(patch_parts[0].in_channels)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # one input per part, in parts order -> (N, sum of the parts' embed_dim)
        return torch.cat([tower(x) for tower, x in zip(self.towers, inputs, strict=True)], dim=1)
