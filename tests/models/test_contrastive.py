"""The contrastive loss: against a NumPy computation by hand, across two gloo ranks, and that it trains."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pimc_ray.models import EncoderConfig, PIMCConfig, SymmetricInfoNCE, build, gather_with_grad, names
from pimc_ray.models.contrastive import MAX_LOGIT_SCALE


def infonce_by_hand(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    """Symmetric InfoNCE in float64 NumPy: mean over pairs of -log softmax, rows (a -> b) and columns (b -> a)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / temperature

    def log_sum_exp(v: np.ndarray) -> float:
        return float(v.max() + np.log(np.exp(v - v.max()).sum()))

    rows = -np.mean([logits[i, i] - log_sum_exp(logits[i]) for i in range(len(a))])
    cols = -np.mean([logits[i, i] - log_sum_exp(logits[:, i]) for i in range(len(a))])
    return float((rows + cols) / 2)


def test_registry_holds_the_parts():
    assert names("loss") == ["symmetric-infonce"]
    assert "mlp" in names("projection")
    assert {"rp-resnet", "rsi-cnn"} <= set(names("encoder"))
    with pytest.raises(ValueError, match="registered"):
        build("loss", "triplet")


def test_loss_equals_the_computation_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss = SymmetricInfoNCE(temperature=0.07)
    got = loss(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert float(got) == pytest.approx(infonce_by_hand(a, b, 0.07), rel=1e-4)
    assert loss.temperature == pytest.approx(0.07)
    # matching pairs aligned: the loss goes to 0; swapping the roles of a and b does not change it
    assert float(loss(torch.eye(4) * 5, torch.eye(4))) < 1e-3
    assert float(
        loss(torch.tensor(b, dtype=torch.float32), torch.tensor(a, dtype=torch.float32))
    ) == pytest.approx(float(got), rel=1e-5)


def test_temperature_is_fixed_or_learnt_and_clamped():
    a, b = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4)
    fixed = SymmetricInfoNCE(temperature=0.1)
    fixed(a, b).backward()
    assert not fixed.logit_scale.requires_grad and fixed.logit_scale.grad is None and a.grad is not None
    learnt = SymmetricInfoNCE(temperature=0.1, learnable=True)
    learnt(a, b).backward()
    assert learnt.logit_scale.grad is not None
    hot = SymmetricInfoNCE(temperature=1e-4)  # exp(logit_scale) = 1e4 is clamped at 100, as in CLIP
    assert hot.temperature == pytest.approx(1 / MAX_LOGIT_SCALE)
    assert float(hot(a, b).detach()) == pytest.approx(
        infonce_by_hand(a.detach().numpy(), b.numpy(), 0.01), rel=1e-4
    )


def test_a_temperature_at_or_below_zero_is_refused_where_the_config_is_made():
    from pimc_ray.errors import InvalidConfigError

    for bad in (0.0, -0.07):
        loss = {"name": "symmetric-infonce", "params": {"temperature": bad, "learnable": True}}
        with pytest.raises(InvalidConfigError, match=r"temperature must be above 0 \(--temperature\)"):
            PIMCConfig(loss=loss)
    assert PIMCConfig().to_dict()["loss"]["params"]["temperature"] == 0.07


def test_gather_without_a_process_group_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x


def _tiny_towers() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return nn.Linear(5, 4), nn.Linear(7, 4)


def _loss_and_grads(
    a_net: nn.Module, b_net: nn.Module, xa: torch.Tensor, xb: torch.Tensor
) -> tuple[float, list]:
    loss = SymmetricInfoNCE(temperature=0.2, learnable=True)(a_net(xa), b_net(xb))
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in (*a_net.parameters(), *b_net.parameters())]


def _rank_main(rank: int, world: int, out: str, xa: torch.Tensor, xb: torch.Tensor) -> None:
    # rendezvous through a file (no free-port race) and gloo pinned to loopback
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    init = f"file://{Path(out) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        a_net, b_net = (nn.parallel.DistributedDataParallel(m) for m in _tiny_towers())
        rows = slice(rank * len(xa) // world, (rank + 1) * len(xa) // world)
        loss, grads = _loss_and_grads(a_net, b_net, xa[rows], xb[rows])
        np.save(Path(out) / f"rank{rank}.npy", np.concatenate([[loss], *[g.numpy().ravel() for g in grads]]))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_global_batch_loss_and_gradient(tmp_path):
    """Each rank holds half the pairs; with the gather (and DDP's gradient average) both ranks see the loss of
    the whole batch and apply exactly the gradient a single process computes on it."""
    rng = np.random.default_rng(1)
    xa = torch.tensor(rng.normal(size=(8, 5)), dtype=torch.float32)
    xb = torch.tensor(rng.normal(size=(8, 7)), dtype=torch.float32)
    for attempt in range(2):
        # Twice, in full fresh-clone suites only, rank 0 aborted inside gloo's set-up ("terminate called without
        # an active exception") before computing anything; never in isolation. One retry with a fresh
        # rendezvous keeps that set-up flake from failing CI; the values below are still checked exactly.
        try:
            out = tmp_path / f"attempt{attempt}"
            out.mkdir()
            mp.start_processes(_rank_main, args=(2, str(out), xa, xb), nprocs=2, start_method="spawn")
            break
        except mp.ProcessExitedException:
            if attempt:
                raise
    tmp_path = out
    single_loss, single_grads = _loss_and_grads(*_tiny_towers(), xa, xb)
    expected = np.concatenate([[single_loss], *[g.numpy().ravel() for g in single_grads]])
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), expected, rtol=1e-4, atol=1e-6)


def tiny_pimc() -> PIMCConfig:
    return PIMCConfig(
        rp=EncoderConfig(params={"widths": [8, 16], "blocks": 1, "embed_dim": 16}, seed=1),
        rsi=EncoderConfig(
            name="rsi-cnn",
            params={"in_channels": 10, "patch_size": 5, "widths": [8, 16], "embed_dim": 16},
            seed=2,
        ),
        projection={"name": "mlp", "params": {"out_dim": 8, "hidden": 16}},
    )


@pytest.fixture
def one_thread():
    """A tiny model: more threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pimc_loss_decreases_over_a_few_steps(one_thread):
    torch.manual_seed(0)
    model = tiny_pimc().build()
    plots = torch.rand(16, 3, 12, 12)  # a tiny fixed batch: the model can learn to match its pairs
    patches = torch.rand(16, 10, 5, 5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(plots, patches)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * min(losses[0], math.log(16))  # well below chance, log(batch)


@pytest.mark.gpu
def test_pimc_step_on_cuda_with_bf16_autocast_matches_float32_on_cpu():
    """What a GPU worker of jobs/pretrain.py --gpu does: bf16 autocast forward, float32 loss, backward, step."""
    torch.manual_seed(0)
    cpu_model = tiny_pimc().build()
    gpu_model = tiny_pimc().build().cuda()
    plots, patches = torch.rand(32, 3, 12, 12), torch.rand(32, 10, 5, 5)
    reference = cpu_model(plots, patches)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = gpu_model(plots.cuda(), patches.cuda())
    assert loss.dtype == torch.float32  # the loss itself is computed in float32
    assert abs(float(loss.detach()) - float(reference)) < 0.05 * float(reference)  # bf16 matmuls, same model
    loss.backward()
    grads = [p.grad for p in gpu_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer = torch.optim.AdamW(gpu_model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = gpu_model(plots.cuda(), patches.cuda())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * min(losses[0], math.log(32))
