"""Encoders: golden outputs, cost, checkpoints (round trip, corruption, mismatch)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pimc_ray.errors import CheckpointError
from pimc_ray.models import EncoderConfig, flops_per_sample, load_checkpoint, save_checkpoint
from pimc_ray.models.checkpoint import PAPER_RP_PARAMS
from pimc_ray.models.heads import LinearClassifier
from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden" / "rp_resnet_default.npy"
GOLDEN_RSI = Path(__file__).parent.parent / "fixtures" / "golden" / "rsi_cnn_default.npy"
RSI = EncoderConfig(name="rsi-cnn", params=DEFAULT_RSI_PARAMS)


def golden_input() -> torch.Tensor:
    rng = np.random.default_rng(1234)
    return torch.from_numpy(rng.random((4, 3, 36, 36), dtype=np.float32) * 2.0)


def golden_patches() -> torch.Tensor:
    rng = np.random.default_rng(4321)
    return torch.from_numpy(rng.random((4, 10, 9, 9), dtype=np.float32) * 0.5)  # reflectance-like


def test_default_rp_encoder_matches_golden_output():
    # Regenerate (only when the architecture changes on purpose) with:
    #   python -c "from tests.models.test_encoders import write_golden; write_golden()"
    model = EncoderConfig().build().eval()
    with torch.no_grad():
        out = model(golden_input()).numpy()
    assert out.shape == (4, 64)
    np.testing.assert_allclose(out, np.load(GOLDEN), rtol=1e-4, atol=1e-5)


def write_golden() -> None:
    with torch.no_grad():
        np.save(GOLDEN, EncoderConfig().build().eval()(golden_input()).numpy())
        np.save(GOLDEN_RSI, RSI.build().eval()(golden_patches()).numpy())


def test_default_rsi_encoder_matches_golden_output():
    model = RSI.build().eval()
    with torch.no_grad():
        out = model(golden_patches()).numpy()
    assert out.shape == (4, 64)
    np.testing.assert_allclose(out, np.load(GOLDEN_RSI), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="9 x 9 patches"):
        model(torch.rand(1, 10, 7, 7))


def test_rsi_cost_by_hand():
    """10-band 9 x 9 patch: stem, a stride-1 stage and two stride-2 stages (9 -> 5 -> 3), fc on 2 x 128."""
    mflop = flops_per_sample(RSI.build(), (10, 9, 9)) / 1e6
    stem = 9 * 9 * 32 * 90
    stage1 = 2 * 9 * 9 * 32 * 288
    stage2 = 5 * 5 * 64 * (288 + 576 + 32)
    stage3 = 3 * 3 * 128 * (576 + 1152 + 64)
    assert mflop == pytest.approx(2 * (stem + stage1 + stage2 + stage3 + 256 * 64) / 1e6)  # 10.48
    big = EncoderConfig(name="rsi-cnn", params={**DEFAULT_RSI_PARAMS, "patch_size": 15}).build()
    assert flops_per_sample(big, (10, 15, 15)) / 1e6 == pytest.approx(24.3, abs=0.05)


def test_initialisation_is_seeded_and_does_not_touch_the_global_rng():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = EncoderConfig(seed=3).build()
    after = torch.rand(1)
    b = EncoderConfig(seed=3).build()
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_default_cost_stays_within_budget():
    mflop = flops_per_sample(EncoderConfig().build(), (3, 36, 36)) / 1e6
    # 2 x multiply-adds, by hand (stages 16-32-64): stem 18*18*16*27, stage 1 2*18*18*16*144,
    # stage 2 9*9*32*(144+288+16), stage 3 5*5*64*(288+576+32), fc 64*64
    by_hand = 2 * (18 * 18 * 16 * 27 + 2 * 18 * 18 * 16 * 144 + 9 * 9 * 32 * 448 + 5 * 5 * 64 * 896 + 64 * 64)
    assert mflop == pytest.approx(by_hand / 1e6)  # 8.46
    # the earlier default, stages 32-64-128: stem 18*18*32*27, stage 1 2*18*18*32*288, ...
    paper = flops_per_sample(EncoderConfig(params=PAPER_RP_PARAMS).build(), (3, 36, 36)) / 1e6
    by_hand = 2 * (
        18 * 18 * 32 * 27 + 2 * 18 * 18 * 32 * 288 + 9 * 9 * 64 * 896 + 5 * 5 * 128 * 1792 + 128 * 64
    )
    assert paper == pytest.approx(by_hand / 1e6)  # 33.28
    assert mflop <= paper <= 50  # the per-pixel budget of docs/design.md


def test_checkpoint_round_trip(tmp_path):
    config = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}, seed=5)
    model = config.build()
    save_checkpoint(tmp_path / "ckpt", model, config, extra={"step": 3})
    loaded, meta = load_checkpoint(tmp_path / "ckpt", expect=config)
    assert meta["step"] == 3
    x = golden_input()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    config = EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16})
    folder = Path(save_checkpoint(tmp_path / "ckpt", config.build(), config))
    other = EncoderConfig(params={"widths": [8, 32], "blocks": 1, "embed_dim": 16})
    with pytest.raises(CheckpointError, match="was asked for"):
        load_checkpoint(folder, expect=other)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path / "missing")


def test_linear_classifier_separates_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y = np.repeat([2, 5, 7], 50)
    x = centres[np.repeat([0, 1, 2], 50)] + rng.normal(size=(150, 8))
    head = LinearClassifier(8, [2, 5, 7], {2: "a", 5: "b", 7: "c"}, {2: "ff0000"}).fit(x, y)
    pred, conf = head.predict(x)
    assert (pred == y).mean() > 0.95
    assert ((conf > 0) & (conf <= 1)).all()
    loaded = LinearClassifier.load(head.save(tmp_path / "head"))
    np.testing.assert_array_equal(loaded.predict(x)[0], pred)
    assert loaded.colormap()[2] == (255, 0, 0, 255)
    with pytest.raises(ValueError, match="not among"):
        head.fit(x, np.full(150, 9))
