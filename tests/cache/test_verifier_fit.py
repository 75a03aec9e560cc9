"""The shared training loop: it must actually fit (a separable problem) and leave eval mode."""

from __future__ import annotations

import numpy as np
import torch

from cache.verifier_fit import fit_bce
from cache.verifier_train import train_mlp


def test_fit_bce_learns_a_separable_problem_and_leaves_eval_mode() -> None:
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    x = torch.tensor(rng.randn(512, 4).astype(np.float32))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    fit_bce(net, opt, lambda rows: net(x[rows]).squeeze(1), y, epochs=20, batch=64,
            order=lambda: rng.permutation(len(y)))
    accuracy = ((net(x).squeeze(1) > 0).float() == y).float().mean().item()
    assert accuracy > 0.95 and not net.training


def test_train_mlp_fits_through_the_shared_loop() -> None:
    rng = np.random.RandomState(1)
    x = rng.randn(400, 6).astype(np.float32)
    y = (x[:, 2] > 0).astype(np.float32)
    head = train_mlp(x, y, seed=0, epochs=15)
    with torch.no_grad():
        scores = head(torch.tensor(x)).squeeze(1).numpy()
    assert ((scores > 0) == (y > 0)).mean() > 0.9 and not head.training
