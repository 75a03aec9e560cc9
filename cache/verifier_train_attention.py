"""Training of the attention family (``cache/verifier_attention.py``) with torch on CPU.

Frozen static token table; learned: token weights (initialised to SIF), the key and value
projections, the compare layer and the head. 3 epochs of AdamW over the training pairs
(~15 s per epoch for 32,000 pairs on 2 cores). Exported as ``att_*`` arrays.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import torch

from cache.verifier_attention import ATT_TOKENS
from cache.verifier_fit import fit_bce

F32 = npt.NDArray[np.float32]
Ids = list[npt.NDArray[np.int64]]
DIM = 64


def _pad(seqs: Ids) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(1, min(ATT_TOKENS, max(len(s) for s in seqs)))
    ids = np.zeros((len(seqs), longest), np.int64)
    mask = np.zeros((len(seqs), longest), np.float32)
    for i, seq in enumerate(seqs):
        cut = seq[:longest]
        ids[i, : len(cut)], mask[i, : len(cut)] = cut, 1.0
    return torch.from_numpy(ids), torch.from_numpy(mask)


class AttentionNet(torch.nn.Module):
    def __init__(self, table: F32, sif: F32, n_feats: int, dim: int = DIM) -> None:
        super().__init__()
        self.table = torch.tensor(table)
        self.logw = torch.nn.Parameter(torch.tensor(np.log(sif)))
        self.f = torch.nn.Linear(table.shape[1], dim)
        self.p = torch.nn.Linear(table.shape[1], dim)
        self.g = torch.nn.Linear(4 * dim, dim)
        self.h = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(3 * dim + n_feats, 128),
                                     torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(128, 1))

    def _side(self, pa: torch.Tensor, pb: torch.Tensor, mb: torch.Tensor, att: torch.Tensor,
              ids: torch.Tensor, ma: torch.Tensor) -> torch.Tensor:
        soft = torch.softmax(att.masked_fill(mb[:, None, :] == 0, -1e4), dim=-1)
        aligned = soft @ pb
        compared = torch.relu(self.g(torch.cat([pa, aligned, pa * aligned, (pa - aligned).abs()], -1)))
        w = torch.exp(self.logw[ids]) * ma
        return (compared * w[..., None]).sum(1) / (w.sum(1, keepdim=True) + 1e-6)

    def forward(self, a: Ids, b: Ids, feats: torch.Tensor) -> torch.Tensor:
        (ia, ma), (ib, mb) = _pad(a), _pad(b)
        ea, eb = self.table[ia], self.table[ib]
        att = torch.relu(self.f(ea)) @ torch.relu(self.f(eb)).transpose(1, 2)
        pa, pb = self.p(ea), self.p(eb)
        va = self._side(pa, pb, mb, att, ia, ma)
        vb = self._side(pb, pa, ma, att.transpose(1, 2), ib, mb)
        out: torch.Tensor = self.h(torch.cat([va + vb, (va - vb).abs(), va * vb, feats], 1)).squeeze(1)
        return out


def train_attention(table: F32, sif: F32, ia: Ids, ib: Ids, feats: F32, y: F32, seed: int = 0,
                    epochs: int = 3) -> dict[str, F32]:
    """Fit on the given pairs (``feats`` standardised); return the ``att_*`` arrays."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    net = AttentionNet(table, sif, feats.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    ft, yt = torch.tensor(feats), torch.tensor(y)
    fit_bce(net, opt, lambda rows: net([ia[k] for k in rows], [ib[k] for k in rows], ft[rows]), yt,
            epochs=epochs, batch=64, order=lambda: rng.permutation(len(y)))
    return export(net)


def export(net: AttentionNet) -> dict[str, F32]:
    def np_(t: torch.Tensor) -> F32:
        out: F32 = t.detach().numpy().copy()
        return out

    h1, h2 = cast(torch.nn.Linear, net.h[1]), cast(torch.nn.Linear, net.h[4])
    return {
        "att_logw": np_(net.logw), "att_f_w": np_(net.f.weight.T), "att_f_b": np_(net.f.bias),
        "att_p_w": np_(net.p.weight.T), "att_p_b": np_(net.p.bias),
        "att_g_w": np_(net.g.weight.T), "att_g_b": np_(net.g.bias),
        "att_h1_w": np_(h1.weight.T), "att_h1_b": np_(h1.bias),
        "att_h2_w": np_(h2.weight.T), "att_h2_b": np_(h2.bias),
    }
