"""The minibatch loop every verifier family trains with (torch, CPU; training only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def fit_bce(net: torch.nn.Module, opt: torch.optim.Optimizer, logits_of: Callable[[Any], torch.Tensor],
            y: torch.Tensor, *, epochs: int, batch: int, order: Callable[[], Any]) -> None:
    """Binary cross-entropy over minibatches of rows. ``order()`` gives each epoch's permutation
    (a family keeps its own random source, so its shipped weights stay reproducible);
    ``logits_of(rows)`` scores those rows. Leaves ``net`` in eval mode."""
    for _ in range(epochs):
        net.train()
        perm = order()
        for start in range(0, len(perm), batch):
            rows = perm[start:start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_of(rows), y[rows])
            torch.autograd.backward(loss)
            opt.step()
    net.eval()
