"""Training checkpoints of PIMC: both encoders, projection heads, loss temperature, optimizer state and step.

A training checkpoint is an encoder checkpoint (:mod:`pimc_ray.models.checkpoint`) of the RP encoder with two
more tensor files, so ``jobs/embed_aoi.py --checkpoint`` can map with any of them directly::

    model.safetensors       the RP encoder (state dict keys without the ``rp.`` prefix)
    pimc.safetensors        everything else of :class:`~pimc_ray.models.pimc.PIMCModel`: ``rsi.*``,
                            ``rp_proj.*``, ``rsi_proj.*``, ``loss.logit_scale``
    optimizer.safetensors   the optimizer's per-parameter state, ``state.<param index>.<name>``
    config.json             {"format": 1, "kind": "pimc-training", "encoder": <rp EncoderConfig>,
                             "pimc": <PIMCConfig>, "step": N, "optimizer": {"param_groups": [...]},
                             "sha256": ..., "files": {...}, ...}

Nothing is pickled: optimizer hyper-parameters are JSON, its moments are tensors. Loading checks every hash and
that the checkpoint's :class:`~pimc_ray.models.pimc.PIMCConfig` is the one asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pimc_ray.errors import CheckpointError, CheckpointMismatchError
from pimc_ray.models.checkpoint import read_meta, read_tensors, save_checkpoint
from pimc_ray.models.pimc import PIMCConfig, PIMCModel
from pimc_ray.storage import UriLike, normalize_uri

__all__ = [
    "TRAINING_KIND",
    "load_training_checkpoint",
    "save_training_checkpoint",
    "unwrap",
    "TrainingState",
]

#: ``config.json["kind"]`` of a training checkpoint.
TRAINING_KIND = "pimc-training"


@dataclass
class TrainingState:
    """What a training checkpoint restores."""

    model: PIMCModel
    """The model with every weight loaded (train mode)."""
    optimizer_state: dict[str, Any]
    """A ``torch.optim.Optimizer.state_dict()`` to pass to ``load_state_dict``."""
    step: int
    """Optimizer steps taken when the checkpoint was written."""
    meta: dict[str, Any]
    """The checkpoint's ``config.json``."""


def unwrap(model: nn.Module) -> Any:
    """The module inside a DDP (or other ``.module``) wrapper."""
    return getattr(model, "module", model)


def _optimizer_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and JSON (its hyper-parameters).

    Returns:
        ``({"state.<i>.<name>": tensor}, {"param_groups": [...], "scalars": {"<i>.<name>": number}})``.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_optimizer_to_tensors`: an optimizer ``state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in dict(meta.get("scalars", {})).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_training_checkpoint(
    folder: UriLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a training checkpoint of ``model`` (a :class:`PIMCModel`, DDP-wrapped or not) as
    :func:`~pimc_ray.models.checkpoint.save_checkpoint` does; returns the folder as a normalised URI.

    Args:
        folder: checkpoint folder, a local path or a URI (replaced if it exists).
        model: the model being trained.
        optimizer: its optimizer.
        step: optimizer steps taken so far.
        extra: more JSON keys for ``config.json`` (loss, run name, ...).
    """
    pimc = unwrap(model)
    if not isinstance(pimc, PIMCModel):
        raise TypeError(f"expected a PIMCModel, got {type(pimc).__name__}")
    rest = {k: v for k, v in pimc.state_dict().items() if not k.startswith("rp.")}
    opt_tensors, opt_meta = _optimizer_to_tensors(optimizer.state_dict())
    meta = {
        "kind": TRAINING_KIND,
        "pimc": pimc.config.to_dict(),
        "step": int(step),
        "optimizer": {"name": type(optimizer).__name__, **opt_meta},
        **dict(extra or {}),
    }
    return save_checkpoint(
        folder, pimc.rp, pimc.config.rp, extra=meta, tensors={"pimc": rest, "optimizer": opt_tensors}
    )


def load_training_checkpoint(folder: UriLike, *, expect: PIMCConfig | None = None) -> TrainingState:
    """Restore a checkpoint written by :func:`save_training_checkpoint`.

    Args:
        folder: the checkpoint folder, a local path or a URI.
        expect: the configuration the caller trains; a checkpoint of another model is refused.

    Raises:
        CheckpointError: a missing, corrupt or partly written file, a checkpoint that is not a training
            checkpoint, or one whose model differs from ``expect``.
    """
    from pimc_ray.models.checkpoint import load_checkpoint

    folder = normalize_uri(folder)
    meta = read_meta(folder)
    if meta.get("kind") != TRAINING_KIND:
        raise CheckpointError(
            f"checkpoint {folder} is an encoder export, not a training checkpoint (kind {meta.get('kind')!r}); "
            "resume from a folder the trainer wrote"
        )
    try:
        config = PIMCConfig.from_dict(meta["pimc"])
        step = int(meta["step"])
        opt_meta = meta["optimizer"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {folder} has an unreadable config.json ({err}); re-export it"
        ) from err
    if expect is not None and _comparable(expect) != _comparable(config):
        raise CheckpointMismatchError(
            f"checkpoint {folder} holds model {config.to_dict()}, but the run trains {expect.to_dict()}; "
            "resume with the same model options, or start a new run (another --name)"
        )
    rp, _ = load_checkpoint(folder, expect=config.rp)
    model = config.build()
    rest = read_tensors(folder, "pimc", meta)
    try:
        model.rp.load_state_dict(rp.state_dict())
        missing, unexpected = model.load_state_dict(rest, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {folder}: weights do not fit the model ({err})") from err
    missing = [k for k in missing if not k.startswith("rp.")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    optimizer_state = _optimizer_from_tensors(read_tensors(folder, "optimizer", meta), opt_meta)
    return TrainingState(model.train(), optimizer_state, step, meta)


def _comparable(config: PIMCConfig) -> dict[str, Any]:
    """A config as a dict without its seeds: they only decide an initialisation the checkpoint replaces."""
    data = config.to_dict()
    data["seed"] = data["rp"]["seed"] = data["rsi"]["seed"] = 0
    return data
