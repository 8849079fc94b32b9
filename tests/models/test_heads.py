"""The classification head is reproducible: the same pixels give the same head, whatever torch's global seed."""

import numpy as np
import torch

from pimc_ray.models.heads import LinearClassifier


def test_the_same_pixels_give_the_same_head_whatever_the_global_seed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, 3, 7)
    heads = []
    for seed in (1, 2):  # torch seeds every process differently: a random start showed in the fitted weights
        torch.manual_seed(seed)
        heads.append(LinearClassifier(16, [3, 7]).fit(x, y, max_iter=5))  # stopped early, as L-BFGS may be
    for name, tensor in heads[0].state_dict().items():
        assert torch.equal(tensor, heads[1].state_dict()[name]), name
