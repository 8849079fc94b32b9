"""Training checkpoints: exact continuation, hashes, refusal of corrupt and mismatched folders, no pickle."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pimc_ray.errors import CheckpointError, CheckpointMismatchError
from pimc_ray.models import (
    EncoderConfig,
    PIMCConfig,
    load_checkpoint,
    load_training_checkpoint,
    save_checkpoint,
    save_training_checkpoint,
)

TINY = PIMCConfig(
    rp=EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}, seed=1),
    rsi=EncoderConfig(
        name="rsi-cnn", params={"in_channels": 10, "patch_size": 3, "widths": [8], "embed_dim": 8}
    ),
    projection={"name": "mlp", "params": {"out_dim": 8, "hidden": 16}},
)


def batches(n):
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.rand(8, 3, 12, 12, generator=gen), torch.rand(8, 10, 3, 3, generator=gen)) for _ in range(n)
    ]


def train(model, optimizer, data):
    for plots, patches in data:
        loss = model(plots, patches)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def optimizer_for(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path):
    data = batches(5)
    straight = TINY.build()
    opt = optimizer_for(straight)
    train(straight, opt, data)

    first = TINY.build()
    opt_first = optimizer_for(first)
    train(first, opt_first, data[:3])
    folder = Path(
        save_training_checkpoint(tmp_path / "step_3", first, opt_first, step=3, extra={"loss": 1.5})
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "pimc.safetensors",
    ]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["kind"] == "pimc-training" and meta["step"] == 3 and meta["loss"] == 1.5
    assert set(meta["files"]) == {"pimc.safetensors", "optimizer.safetensors"}

    state = load_training_checkpoint(folder, expect=TINY)
    assert state.step == 3
    resumed = state.model
    opt_resumed = optimizer_for(resumed)
    opt_resumed.load_state_dict(state.optimizer_state)
    train(resumed, opt_resumed, data[3:])
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # same weights as five uninterrupted steps, bit for bit


def test_a_training_checkpoint_is_an_encoder_checkpoint_of_the_rp_encoder(tmp_path):
    model = TINY.build()
    folder = save_training_checkpoint(tmp_path / "c", model, optimizer_for(model), step=0)
    encoder, _ = load_checkpoint(folder, expect=TINY.rp)
    x = torch.rand(2, 3, 12, 12)
    model.eval()
    with torch.no_grad():
        assert torch.equal(encoder(x), model.rp(x))


def test_corrupt_partial_and_mismatched_checkpoints_are_refused(tmp_path):
    model = TINY.build()
    folder = Path(save_training_checkpoint(tmp_path / "c", model, optimizer_for(model), step=2))

    other = dataclasses.replace(TINY, rsi=EncoderConfig(name="rsi-cnn", params={"patch_size": 5}))
    with pytest.raises(CheckpointMismatchError, match="resume with the same model options"):
        load_training_checkpoint(folder, expect=other)
    reseeded = dataclasses.replace(TINY, seed=9)  # seeds only decide an initialisation: not a mismatch
    assert load_training_checkpoint(folder, expect=reseeded).step == 2

    for name in ("pimc.safetensors", "optimizer.safetensors"):
        path = folder / name
        good = path.read_bytes()
        path.write_bytes(good[: len(good) // 2])  # a partly written file
        with pytest.raises(CheckpointError, match=f"{name} does not match the hash"):
            load_training_checkpoint(folder)
        path.write_bytes(good)
        path.unlink()
        with pytest.raises(CheckpointError, match=f"no {name}"):
            load_training_checkpoint(folder)
        path.write_bytes(good)

    encoder_only = save_checkpoint(tmp_path / "enc", model.rp, TINY.rp)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_training_checkpoint(encoder_only)
    (folder / "config.json").write_text(
        '{"format": 1, "kind": "pimc-training", "encoder": {"name": "rp-resnet"}}'
    )
    with pytest.raises(CheckpointError, match="unreadable config.json"):
        load_training_checkpoint(folder)


def test_checkpoints_hold_no_pickle(tmp_path):
    model = TINY.build()
    folder = Path(save_training_checkpoint(tmp_path / "c", model, optimizer_for(model), step=1))
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", path  # neither a pickle nor a torch zip archive
