"""What a run asks for: :class:`AreaRequest` (what every per-pixel job shares) and :class:`MapRequest`.

Requests are frozen and validated once; jobs build them from their arguments (:mod:`pimc_ray.cli`) and the library
functions (:func:`pimc_ray.mapping.maps.map_aoi`, :func:`pimc_ray.mapping.indices.export_indices`) take them.
A request's key hashes everything that decides the outputs' pixels, so a rerun knows what it may skip.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pimc_ray.data.aoi import AOI
from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.series import SeriesSpec
from pimc_ray.data.stac import Item, frozen_search
from pimc_ray.errors import InvalidConfigError
from pimc_ray.kernels.patches import check_composite
from pimc_ray.mapping.embedder import PRECISIONS
from pimc_ray.mapping.runner import Parallelism
from pimc_ray.models.checkpoint import EncoderRef, sha256_file
from pimc_ray.models.heads import HEAD_WEIGHTS
from pimc_ray.storage import join_uri

logger = logging.getLogger(__name__)

__all__ = ["AreaRequest", "MapRequest", "digest"]


def digest(payload: Any) -> str:
    """A short, stable hash of a JSON-ready value (16 hex digits of the SHA-256 of its sorted JSON)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AreaRequest:
    """The part of a run every per-pixel job shares: where, when, from which catalog, to where, how wide."""

    aoi: AOI
    spec: SeriesSpec
    stac_url: str
    out: str
    """Output location: a local folder or ``s3://bucket/prefix``."""
    collection: str = "sentinel-2-l2a"
    max_cloud_cover: float | None = None
    parallel: Parallelism = field(default_factory=Parallelism)
    """Workers, CPUs, GPUs."""
    window_size: int = 128
    """Window edge in pixels (the unit of work)."""
    snapshot: str | None = None
    """Frozen item list, a local path or a URI (``.ndjson``, or stac-geoparquet ``.parquet``): read instead of
    searching when it exists, written after searching otherwise."""

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise InvalidConfigError(f"--window-size must be at least 1, got {self.window_size}")

    def search(self) -> list[Item]:
        """The run's items: from the snapshot if there is one, else from the STAC API (then frozen there)."""
        return frozen_search(
            self.aoi,
            self.spec.dates,
            stac_url=self.stac_url,
            collection=self.collection,
            max_cloud_cover=self.max_cloud_cover,
            snapshot=self.snapshot,
        )

    def base_key(self, item_ids: Sequence[str], **extra: Any) -> str:
        """Hash of the area, the series spec, the items and ``extra`` (what a job adds that decides pixels)."""
        return digest(
            {
                "aoi": self.aoi.__geo_interface__,
                "spec": self.spec.to_dict(),
                "items": sorted(item_ids),
                **extra,
            }
        )


@dataclass(frozen=True)
class MapRequest(AreaRequest):
    """One mapping run: the area (see :class:`AreaRequest`), the encoder, the head, the tiles."""

    encoder: EncoderRef = field(default_factory=EncoderRef)
    """The encoder (a checkpoint, or a seeded random initialisation) and the composite its patches come from."""
    head: str | None = None
    """The folder of a saved classification head, a local path or a URI; else one is fit on ``head_train_aoi``'s
    labels."""
    head_train_aoi: AOI | None = None
    forecast_head: str | None = None
    """The folder of a saved forecast head (``jobs/train_forecast.py``), a local path or a URI: with one, every tile
    also gets the NDVI, EVI and SAVI forecast of the steps after the run's dates."""
    labels_collection: str = "pimc-sample-labels"
    per_class: int = 400
    """Labelled pixels per class used to fit the head."""
    batch_size: int = 1024
    """Pixels per encoder batch."""
    precision: str = "float32"
    """What the encoders compute in: ``float32``, or ``bfloat16`` (autocast; see
    :class:`~pimc_ray.mapping.embedder.WindowEmbedder`)."""
    tile_size: int = 1024
    """Tile edge in pixels (the unit of output)."""
    write_embedding: bool = True
    """False for classification-only runs."""
    collection_id: str = "pimc-maps"
    """Id of the STAC collection describing the outputs."""
    update: bool = False
    """Rerun in place: remap only the tiles whose inputs changed (their items, the model, the parameters) as
    new versions of them (``pimc run execute``, ``--update``). Without it an output holds one run, and a run
    with other items, model or parameters is refused."""
    accept_degraded: bool = False
    """Keep published tiles some of whose reads became nodata (``--on-unreadable nodata``) as they are; without it,
    a rerun maps them again."""
    run_name: str | None = None
    """The run spec's name, kept in the manifest: another spec's run is refused in its output."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tile_size < 16 or self.tile_size % 16:
            raise InvalidConfigError(
                f"--tile-size must be a multiple of 16 pixels (COG blocks), got {self.tile_size}"
            )
        if self.batch_size < 1:
            raise InvalidConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise InvalidConfigError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        try:
            check_composite(self.encoder.composite)
        except ValueError as err:
            raise InvalidConfigError(str(err)) from err

    def patch_params(self) -> dict[str, Any] | None:
        """What decides an image-patch encoder's input besides its config: bands, composite and the read halo
        (None for plot encoders, whose run keys stay as they were)."""
        config = self.encoder.config
        if "patches" not in config.inputs.split("+"):
            return None
        return {"bands": list(BANDS), "composite": self.encoder.composite, "halo": config.halo}

    def params(self, weights: str) -> dict[str, Any]:
        """Everything but the items that decides the outputs' pixels (``weights``: see :meth:`EncoderRef.load`).

        The encoder config decides the patch size and with it the halo; :meth:`patch_params` adds the bands and
        the composite an image-patch encoder's patches come from. A head fit by the run is not here (it does not
        exist yet when the run starts): :func:`~pimc_ray.mapping.maps.map_aoi` adds its digest to tiles' keys.
        """
        patches = self.patch_params()
        return {
            "job": "map",
            "spec": self.spec.to_dict(),
            "encoder": self.encoder.config.to_dict(),
            "weights": weights,
            "head": sha256_file(join_uri(self.head, HEAD_WEIGHTS)) if self.head else None,
            "head_train_aoi": self.head_train_aoi.__geo_interface__ if self.head_train_aoi else None,
            "per_class": self.per_class,
            "tile_size": self.tile_size,
            "write_embedding": self.write_embedding,
            **({"patches": patches} if patches is not None else {}),
            **({"precision": self.precision} if self.precision != "float32" else {}),  # earlier keys stay
            **(
                {"forecast_head": sha256_file(join_uri(self.forecast_head, HEAD_WEIGHTS))}
                if self.forecast_head
                else {}
            ),
        }

    def key(self, item_ids: Sequence[str], weights: str) -> str:
        """Hash of the area, the items and :meth:`params`: a run's key (what one output holds, without
        ``update``)."""
        params = self.params(weights)
        params.pop("spec")  # base_key adds it
        return self.base_key(item_ids, **params)

    def layout(self) -> dict[str, Any]:
        """What makes an output one map that reruns update in place (:attr:`update`): the run's name, area,
        tiles and products. Items, model and parameters may change between reruns; these may not. As JSON values
        (lists, not tuples), so that it compares equal to the one a manifest holds."""
        layout = {
            "name": self.run_name,
            "aoi": self.aoi.__geo_interface__,
            "tile_size": self.tile_size,
            "embedding": self.write_embedding,
            "classes": self.head is not None or self.head_train_aoi is not None,
            **({"forecast": True} if self.forecast_head else {}),  # absent without: earlier runs keep theirs
        }
        return json.loads(json.dumps(layout))
