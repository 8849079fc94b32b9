"""A finished pretraining run's encoders, exported for mapping (what ``jobs/embed_aoi.py --checkpoint`` loads), to a
local folder or a URI (``s3://bucket/models/enc``: mapping workers on any node load it from there)."""

from __future__ import annotations

from typing import Any

from pimc_ray.data.catalogs import BANDS
from pimc_ray.kernels.patches import MEDIAN
from pimc_ray.models.checkpoint import EncoderConfig, save_checkpoint
from pimc_ray.models.train_state import load_training_checkpoint
from pimc_ray.scratch import temporary_folder
from pimc_ray.storage import UriLike, join_uri
from pimc_ray.training.config import RunSpec

__all__ = ["JOINT_EXPORT", "RP_EXPORT", "RSI_EXPORT", "default_embedding", "export_encoder"]

#: Sub-folder of an export holding the RP encoder alone (the paper's embedding), an encoder checkpoint of its own.
RP_EXPORT = "rp"
#: Sub-folder of an export holding the RSI (image-patch) encoder, an encoder checkpoint of its own.
RSI_EXPORT = "rsi"
#: Sub-folder of an export holding both encoders side by side (``pimc-joint``), an encoder checkpoint too.
JOINT_EXPORT = "joint"


def default_embedding(rp: EncoderConfig, rsi: EncoderConfig, steps: int) -> EncoderConfig:
    """The embedding a pretraining run exports as its default (``pimc-concat``): the pixel's index series
    (``steps`` per index), its pretrained RP encoder and its pretrained image-patch (RSI) encoder side by side,
    the learning check's best (docs/learning-check.md)."""
    series = {"name": "index-series", "params": {"steps": steps}}
    return EncoderConfig(name="pimc-concat", params={"parts": [series, rp.to_dict(), rsi.to_dict()]})


def export_encoder(
    checkpoint: str, out: UriLike, *, run: RunSpec | None = None, filesystem: Any = None
) -> str:
    """Write the encoders of a training checkpoint (local, or in object storage through the pyarrow ``filesystem``
    Ray Train wrote it with) for mapping to ``out``, a local folder or a URI; returns ``out`` normalised.

    Four encoder checkpoints, each one ``jobs/embed_aoi.py --checkpoint`` and :func:`load_checkpoint` accept::

        out/model.safetensors, out/config.json              the default embedding (pimc-concat): the index series,
                                                            the RP encoder and the RSI encoder side by side
                                                            (:func:`default_embedding`), with a ``patches`` record
        out/rp/model.safetensors, out/rp/config.json        the RP encoder alone (rp-resnet), the paper's
        out/rsi/model.safetensors, out/rsi/config.json      the RSI encoder (rsi-cnn), with a ``patches`` record
                                                            (bands, composite, patch size) of its pretraining pairs
        out/joint/model.safetensors, out/joint/config.json  RP and RSI side by side (pimc-joint), the same record

    Every ``config.json`` has ``"kind": "pimc-encoder"``, the ``branch`` (``default``, ``rp``, ``rsi`` or
    ``joint``) and a ``trained`` record. Loading ``out`` reads and hashes its own two files only, so the
    sub-folders do not disturb it; they are written after it, because writing a checkpoint replaces its folder.
    """
    with temporary_folder("pimc-export-") as tmp:
        local = checkpoint
        if filesystem is not None:
            from pyarrow import fs

            fs.copy_files(checkpoint, tmp, source_filesystem=filesystem)
            local = tmp
        state = load_training_checkpoint(local)
        config = state.model.config
        pairs = state.meta.get("pairs")
        meta = {
            "kind": "pimc-encoder",
            "trained": {
                "run": run.name if run else None,
                "step": state.step,
                "loss": state.meta.get("loss"),
                "from": str(checkpoint),
                "pimc": state.meta["pimc"],
                "pairs": pairs,
            },
        }
        patches = {
            "bands": list(BANDS),
            "composite": (pairs or {}).get("composite", MEDIAN),
            "patch_size": config.patch_size,
        }
        steps = int(((pairs or {}).get("series") or {}).get("steps", 36))
        default_config = default_embedding(config.rp, config.rsi, steps)
        default = default_config.build()
        default.towers[1].load_state_dict(state.model.rp.state_dict())
        default.towers[2].load_state_dict(state.model.rsi.state_dict())
        folder = save_checkpoint(
            out, default, default_config, extra={**meta, "branch": "default", "patches": patches}
        )
        save_checkpoint(
            join_uri(folder, RP_EXPORT), state.model.rp, config.rp, extra={**meta, "branch": "rp"}
        )
        save_checkpoint(
            join_uri(folder, RSI_EXPORT),
            state.model.rsi,
            config.rsi,
            extra={**meta, "branch": "rsi", "patches": patches},
        )
        joint_config = EncoderConfig(
            name="pimc-joint", params={"rp": config.rp.to_dict(), "rsi": config.rsi.to_dict()}
        )
        joint = joint_config.build()
        joint.rp.load_state_dict(state.model.rp.state_dict())
        joint.rsi.load_state_dict(state.model.rsi.state_dict())
        save_checkpoint(
            join_uri(folder, JOINT_EXPORT),
            joint,
            joint_config,
            extra={**meta, "branch": "joint", "patches": patches},
        )
        return folder
