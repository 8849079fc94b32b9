"""The evaluation tests' datasets and checkpoints: written once per session under pytest's temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.fixtures import PastisPatchData, write_eurosat, write_pastis


@pytest.fixture(scope="session")
def pastis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, PastisPatchData]]:
    """A PASTIS folder of five 128 x 128 patches (one per fold, 44 observations each) and what was written."""
    root = tmp_path_factory.mktemp("pastis") / "PASTIS"
    return root, write_pastis(root)


@pytest.fixture(scope="session")
def eurosat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A EuroSAT_MS folder with six 13-band 64 x 64 images per class and what was written."""
    root = tmp_path_factory.mktemp("eurosat") / "EuroSAT_MS"
    return root, write_eurosat(root)


def _with_statistics(model):
    """``model`` with batch-norm statistics of plausible inputs, as pretraining leaves them (plots of index series
    in [-1, 1], patches of reflectance about 0.1): a stand-in for a pretrained model."""
    import torch

    from pimc_ray.kernels.recurrence import rp_batch

    generator = torch.Generator().manual_seed(7)
    series = torch.rand(256, 3, 36, generator=generator) * 2 - 1
    plots = torch.from_numpy(rp_batch(series.numpy()))
    patches = 0.05 + 0.25 * torch.rand(256, 10, 9, 9, generator=generator)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(plots, patches) if model.inputs == "plots+patches" else model(plots)
    return model.eval()


@pytest.fixture(scope="session")
def joint_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An encoder checkpoint holding both towers (``pimc-joint``, seed 7: not the random-init's seed 0)."""
    from pimc_ray.models.checkpoint import DEFAULT_RP_PARAMS, EncoderConfig, save_checkpoint
    from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS

    rp = {"name": "rp-resnet", "params": dict(DEFAULT_RP_PARAMS)}
    rsi = {"name": "rsi-cnn", "params": dict(DEFAULT_RSI_PARAMS)}
    config = EncoderConfig(name="pimc-joint", params={"rp": rp, "rsi": rsi}, seed=7)
    folder = tmp_path_factory.mktemp("models") / "joint"
    return save_checkpoint(folder, _with_statistics(config.build()), config)


@pytest.fixture(scope="session")
def rp_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An encoder checkpoint of the RP encoder alone (what a pretraining export writes to ``rp/``)."""
    from pimc_ray.models.checkpoint import EncoderConfig, save_checkpoint

    config = EncoderConfig(seed=7)
    return save_checkpoint(tmp_path_factory.mktemp("models") / "rp", _with_statistics(config.build()), config)
