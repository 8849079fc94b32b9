"""A finished pretraining run's encoders, exported for mapping (what ``jobs/embed_aoi.py --checkpoint`` loads)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pimc_ray.data.catalogs import BANDS
from pimc_ray.kernels.patches import MEDIAN
from pimc_ray.models.checkpoint import EncoderConfig, save_checkpoint
from pimc_ray.models.train_state import load_training_checkpoint
from pimc_ray.training.config import RunSpec

__all__ = ["JOINT_EXPORT", "RSI_EXPORT", "export_encoder"]

#: Sub-folder of an export holding the RSI (image-patch) encoder, an encoder checkpoint of its own.
RSI_EXPORT = "rsi"
#: Sub-folder of an export holding both encoders side by side (``pimc-joint``), an encoder checkpoint too.
JOINT_EXPORT = "joint"


def export_encoder(checkpoint: str, out: Path, *, run: RunSpec | None = None, filesystem: Any = None) -> Path:
    """Write the encoders of a training checkpoint (local or in object storage) for mapping; returns ``out``.

    Three encoder checkpoints, each one ``jobs/embed_aoi.py --checkpoint`` and :func:`load_checkpoint` accept::

        out/model.safetensors, out/config.json              the RP encoder (rp-resnet)
        out/rsi/model.safetensors, out/rsi/config.json      the RSI encoder (rsi-cnn), with a ``patches`` record
                                                            (bands, composite, patch size) of its pretraining pairs
        out/joint/model.safetensors, out/joint/config.json  both side by side (pimc-joint), the same record

    Every ``config.json`` has ``"kind": "pimc-encoder"``, the ``branch`` (``rp``, ``rsi`` or ``joint``) and a
    ``trained`` record. Loading ``out`` reads and hashes its own two files only, so the sub-folders do not disturb
    it; they are written after the RP encoder, because writing a checkpoint replaces its whole folder.
    """
    with tempfile.TemporaryDirectory(prefix="pimc-export-") as tmp:
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
        folder = save_checkpoint(out, state.model.rp, config.rp, extra={**meta, "branch": "rp"})
        save_checkpoint(
            folder / RSI_EXPORT,
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
            folder / JOINT_EXPORT, joint, joint_config, extra={**meta, "branch": "joint", "patches": patches}
        )
        return folder
