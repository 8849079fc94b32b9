"""Checkpoints as safetensors weights plus a JSON config: never pickle.

A checkpoint is a folder::

    model.safetensors   the state dict (tensors only)
    config.json         {"format": 1, "encoder": {...EncoderConfig...}, "sha256": <of model.safetensors>, ...}

Loading verifies the hash and that the weights fit the configured model, so a corrupt or mismatched checkpoint
is refused with a :class:`~pimc_ray.errors.CheckpointError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pimc_ray.errors import CheckpointError
from pimc_ray.models.registry import build_encoder

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder to build and with which parameters."""

    name: str = "rp-resnet"
    """Registry name of the encoder."""
    params: Mapping[str, Any] = field(
        default_factory=lambda: {"widths": [32, 64, 128], "blocks": 1, "embed_dim": 64}
    )
    """Keyword arguments of the encoder class."""
    seed: int = 0
    """Seed of the random initialisation (when no checkpoint is loaded)."""

    def build(self) -> nn.Module:
        """A freshly initialised encoder (deterministic for a given seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_encoder(self.name, self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        return cls(name=str(data["name"]), params=dict(data.get("params", {})), seed=int(data.get("seed", 0)))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    folder: str | Path, model: nn.Module, config: EncoderConfig, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and ``config`` into ``folder`` atomically (temp folder + rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        meta = {"format": FORMAT_VERSION, "encoder": config.to_dict(), "sha256": sha256_file(tmp / WEIGHTS)}
        meta.update(dict(extra or {}))
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_checkpoint(
    folder: str | Path, *, expect: EncoderConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder saved by :func:`save_checkpoint`; returns ``(model in eval mode, metadata)``.

    Raises:
        CheckpointError: missing files, hash mismatch (corrupt weights), unreadable JSON, a config different from
            ``expect``, or weights that do not fit the configured model.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config_path = folder / WEIGHTS, folder / CONFIG
    for path in (weights, config_path):
        if not path.exists():
            raise CheckpointError(
                f"checkpoint {folder} has no {path.name}; point to a folder written by pimc-ray"
            )
    try:
        meta = json.loads(config_path.read_text())
        config = EncoderConfig.from_dict(meta["encoder"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {folder} has an unreadable {CONFIG} ({err}); re-export it"
        ) from err
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format {meta.get('format')}, expected {FORMAT_VERSION}"
        )
    if meta.get("sha256") != sha256_file(weights):
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS} does not match the hash in {CONFIG} (corrupt or partly written); "
            "restore it or use an earlier checkpoint"
        )
    if expect is not None and expect.to_dict() | {"seed": 0} != config.to_dict() | {"seed": 0}:
        raise CheckpointError(
            f"checkpoint {folder} holds encoder {config.to_dict()}, but {expect.to_dict()} was asked for; "
            "use a matching --encoder configuration or another checkpoint"
        )
    model = config.build()
    try:
        model.load_state_dict(load_file(str(weights)))
    except (RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {folder}: weights do not fit {config.name} ({err})") from err
    model.eval()
    return model, meta
