"""Checkpoints as safetensors weights plus a JSON config: never pickle.

A checkpoint is a folder::

    model.safetensors   the encoder's state dict (tensors only)
    <name>.safetensors  optional further tensors (a training checkpoint adds ``pimc`` and ``optimizer``)
    config.json         {"format": 1, "encoder": {...EncoderConfig...}, "sha256": <of model.safetensors>,
                         "files": {"<name>.safetensors": <sha256>, ...}, ...extra}

The folder is a local path or a URI (``s3://bucket/models/enc``): it is written and read through
:mod:`pimc_ray.storage`, so a Ray worker on any node loads the encoder from the URI, never from the driver's disk.
``config.json`` is published last, so a reader that finds it finds the files it names.

Loading verifies the hashes and that the weights fit the configured model, so a corrupt or mismatched checkpoint
is refused with a :class:`~pimc_ray.errors.CheckpointError` that says what is wrong. Every training checkpoint
(:mod:`pimc_ray.models.train_state`) is also an encoder checkpoint: the embedding job can map with it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pimc_ray.errors import CheckpointError, CheckpointMismatchError, StorageError
from pimc_ray.kernels.patches import MEDIAN
from pimc_ray.models.registry import build_encoder, encoder_class
from pimc_ray.storage import (
    UriLike,
    is_local,
    join_uri,
    normalize_uri,
    read_bytes,
    read_bytes_or_none,
    staged_folder,
)

__all__ = [
    "CONFIG",
    "DEFAULT_RP_PARAMS",
    "PAPER_RP_PARAMS",
    "WEIGHTS",
    "EncoderConfig",
    "EncoderRef",
    "load_checkpoint",
    "read_encoder_config",
    "read_meta",
    "read_tensors",
    "save_checkpoint",
    "sha256_file",
]

FORMAT_VERSION = 1

#: The default RP encoder: stages 16-32-64, one basic block each, 64-d; about 8.5 MFLOP per 36 x 36 plot.
DEFAULT_RP_PARAMS: Mapping[str, Any] = {"widths": [16, 32, 64], "blocks": 1, "embed_dim": 64}
#: The RP encoder at the size earlier versions used by default (stages 32-64-128): about 33.3 MFLOP per plot,
#: no better beside the index series in docs/learning-check.md's ablation, and slower than the speed target.
PAPER_RP_PARAMS: Mapping[str, Any] = {"widths": [32, 64, 128], "blocks": 1, "embed_dim": 64}
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder to build and with which parameters."""

    name: str = "rp-resnet"
    """Registry name of the encoder."""
    params: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RP_PARAMS))
    """Keyword arguments of the encoder class (the default RP encoder's: :data:`DEFAULT_RP_PARAMS`)."""
    seed: int = 0
    """Seed of the random initialisation (when no checkpoint is loaded)."""

    def build(self) -> Any:
        """A freshly initialised encoder (deterministic for a given seed): an ``nn.Module`` with the ``inputs``,
        ``embed_dim`` and ``halo`` attributes of :class:`~pimc_ray.models.encoders.PlotEncoder` and its kin."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return build_encoder(self.name, self.params)

    @property
    def inputs(self) -> str:
        """What the encoder sees of a pixel: ``"plots"`` (its recurrence plots), ``"patches"`` (an image patch) or
        ``"plots+patches"`` (both: the joint encoder)."""
        fixed = getattr(encoder_class(self.name), "inputs", None)
        return str(fixed) if isinstance(fixed, str) else str(self.build().inputs)  # a concat: its parts say

    @property
    def halo(self) -> int:
        """Pixels of spatial context the encoder needs on each side of a pixel (0 for plot encoders).

        The encoder decides it (its ``halo`` attribute, see :mod:`pimc_ray.models.encoders`); this builds one
        with these parameters to ask it, which takes milliseconds.
        """
        return int(self.build().halo)

    def describe(self) -> str:
        """The encoder's name, with its parts for an encoder made of several (``pimc-concat(index-series,
        rp-resnet)``): how outputs name the embedding they hold."""
        parts = self.params.get("parts") or [self.params[k] for k in ("rp", "rsi") if k in self.params]
        return f"{self.name}({', '.join(str(p['name']) for p in parts)})" if parts else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        return cls(name=str(data["name"]), params=dict(data.get("params", {})), seed=int(data.get("seed", 0)))


def sha256_file(uri: UriLike) -> str:
    """Hex SHA-256 of a file or object (a local path or a URI).

    Raises:
        StorageError: nothing is there, or it cannot be read.
    """
    if not is_local(uri):
        return hashlib.sha256(read_bytes(uri)).hexdigest()
    digest = hashlib.sha256()  # a local file in blocks: it may be larger than memory
    try:
        with open(normalize_uri(uri), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise StorageError(f"cannot read {os.fspath(uri)} ({err})") from err
    return digest.hexdigest()


def save_checkpoint(
    folder: UriLike,
    model: nn.Module,
    config: EncoderConfig,
    *,
    extra: Mapping[str, Any] | None = None,
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> str:
    """Write ``model``'s weights and ``config`` into ``folder``; returns it as a normalised URI.

    A local folder is written beside its place and renamed into it; under an S3 prefix each file is uploaded
    whole and ``config.json`` last (see :func:`~pimc_ray.storage.staged_folder`).

    Args:
        folder: the checkpoint folder, a local path or a URI (replaced if it exists).
        model: the encoder.
        config: how to rebuild it.
        extra: more JSON-serialisable keys for ``config.json``.
        tensors: further tensor files, ``name -> state dict``, written as ``<name>.safetensors`` and hashed in
            ``config.json["files"]`` (read them back with :func:`read_tensors`).
    """
    from safetensors.torch import save_file

    with staged_folder(folder, last=(CONFIG,)) as tmp:
        save_file(_cpu_state(model.state_dict()), str(tmp / WEIGHTS))
        files = {}
        for name, state in (tensors or {}).items():
            filename = f"{name}.safetensors"
            if filename == WEIGHTS:
                raise ValueError(f"{filename} is the encoder's own file; pick another name")
            save_file(_cpu_state(state), str(tmp / filename))
            files[filename] = sha256_file(tmp / filename)
        meta: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "encoder": config.to_dict(),
            "sha256": sha256_file(tmp / WEIGHTS),
        }
        if files:
            meta["files"] = files
        meta.update(dict(extra or {}))
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return normalize_uri(folder)


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _read_file(folder: str, filename: str) -> bytes | None:
    """A file of a checkpoint folder (local or a URI), None when it is not there."""
    return read_bytes_or_none(join_uri(folder, filename))


def read_meta(folder: UriLike) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder (a local path or a URI), checked for format.

    Raises:
        CheckpointError: missing or unreadable ``config.json``, or another format version.
        StorageError: the folder's store cannot be reached.
    """
    folder = normalize_uri(folder)
    data = _read_file(folder, CONFIG)
    if data is None:
        raise CheckpointError(f"checkpoint {folder} has no {CONFIG}; point to a folder written by pimc-ray")
    try:
        meta = json.loads(data)
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON {type(meta).__name__}, not an object")
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"checkpoint {folder} has an unreadable {CONFIG} ({err}); re-export it"
        ) from err
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format {meta.get('format')}, expected {FORMAT_VERSION}"
        )
    return meta


def read_tensors(folder: UriLike, name: str, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``<name>.safetensors`` in a checkpoint folder, after checking their hash in ``meta``.

    Raises:
        CheckpointError: the file is missing, not listed in ``meta["files"]``, corrupt or unreadable.
    """
    folder = normalize_uri(folder)
    filename = f"{name}.safetensors"
    expected = dict(meta.get("files") or {}).get(filename)
    data = None if expected is None else _read_file(folder, filename)
    if expected is None or data is None:
        raise CheckpointError(
            f"checkpoint {folder} has no {filename}; it is not a training checkpoint written by pimc-ray"
        )
    return _tensors(folder, filename, data, expected)


def _tensors(folder: str, filename: str, data: bytes, expected: object) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes, once their SHA-256 is the ``expected`` one.

    Raises:
        CheckpointError: another hash (corrupt or partly written), or bytes safetensors cannot read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint {folder}: {filename} does not match the hash in {CONFIG} (corrupt or partly written); "
            "restore it or use an earlier checkpoint"
        )
    try:
        return load(data)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint {folder}: cannot read {filename} ({err})") from err


def read_encoder_config(folder: UriLike) -> EncoderConfig:
    """The :class:`EncoderConfig` a checkpoint folder holds (what to build before loading its weights).

    Raises:
        CheckpointError: no readable ``config.json`` or no valid ``encoder`` entry in it.
    """
    return _encoder_config(normalize_uri(folder), read_meta(folder))


def _encoder_config(folder: str, meta: Mapping[str, Any]) -> EncoderConfig:
    try:
        return EncoderConfig.from_dict(meta["encoder"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {folder} has an unreadable {CONFIG} (no valid 'encoder': {err}); re-export it"
        ) from err


def load_checkpoint(
    folder: UriLike, *, expect: EncoderConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an encoder saved by :func:`save_checkpoint` (a local folder or a URI); returns ``(model in eval mode,
    metadata)``.

    Raises:
        CheckpointError: missing files, hash mismatch (corrupt weights), unreadable JSON, a config different from
            ``expect``, or weights that do not fit the configured model.
        StorageError: the folder's store cannot be reached.
    """
    from safetensors import SafetensorError

    folder = normalize_uri(folder)
    weights = _read_file(folder, WEIGHTS)
    if weights is None:
        raise CheckpointError(f"checkpoint {folder} has no {WEIGHTS}; point to a folder written by pimc-ray")
    meta = read_meta(folder)
    config = _encoder_config(folder, meta)
    state = _tensors(folder, WEIGHTS, weights, meta.get("sha256"))
    if expect is not None and expect.to_dict() | {"seed": 0} != config.to_dict() | {"seed": 0}:
        raise CheckpointMismatchError(
            f"checkpoint {folder} holds encoder {config.to_dict()}, but {expect.to_dict()} was asked for; "
            "use a matching --encoder configuration or another checkpoint"
        )
    try:
        model = config.build()
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {folder} names an encoder this version cannot build ({err})"
        ) from err
    try:
        model.load_state_dict(state)
    except (RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"checkpoint {folder}: weights do not fit {config.name} ({err})") from err
    model.eval()
    return model, meta


@dataclass(frozen=True)
class EncoderRef:
    """Which encoder a run uses: a checkpoint folder, or the seeded random initialisation of a config.

    Small and picklable: the driver checks it once (:meth:`open`, then :meth:`load` to fail early on a bad
    checkpoint) and every worker loads its own model from it.
    """

    config: EncoderConfig = field(default_factory=EncoderConfig)
    """The encoder to build (read from the checkpoint's ``config.json``)."""
    checkpoint: str | None = None
    """The checkpoint folder of the trained weights, a local path or a URI (:func:`~pimc_ray.storage.normalize_uri`);
    None means the random initialisation of ``config`` (labelled as such in the outputs)."""
    composite: str = MEDIAN
    """What an image-patch encoder's patches are cut from: the composite it was pretrained on (the ``patches``
    record of an export), the median for any other checkpoint."""

    @classmethod
    def open(cls, checkpoint: UriLike | None, *, default: EncoderConfig | None = None) -> EncoderRef:
        """The encoder of a checkpoint folder, a local path or a URI (its ``config.json`` read and checked), or
        ``default`` (the default :class:`EncoderConfig`) randomly initialised when ``checkpoint`` is None.

        Raises:
            CheckpointError: no readable ``config.json`` or no valid encoder in it.
            StorageError: a bad URI, or a store that cannot be reached.
        """
        if checkpoint is None:
            return cls(default or EncoderConfig())
        folder = normalize_uri(checkpoint)
        meta = read_meta(folder)
        composite = str((meta.get("patches") or {}).get("composite", MEDIAN))
        return cls(_encoder_config(folder, meta), folder, composite)

    @property
    def random(self) -> bool:
        """True when no trained weights are loaded."""
        return self.checkpoint is None

    def load(self) -> tuple[Any, str]:
        """The encoder in eval mode and a label of its weights: ``random-init (untrained, seed N)`` or
        ``checkpoint sha256:<hash of model.safetensors>``.

        Raises:
            CheckpointError: the checkpoint is missing, corrupt or does not match ``config``.
        """
        if self.checkpoint is None:
            return self.config.build().eval(), f"random-init (untrained, seed {self.config.seed})"
        model, meta = load_checkpoint(self.checkpoint, expect=self.config)
        return model, f"checkpoint sha256:{meta['sha256']}"
