"""Train the verifier's pair model and write cache/verifier_model.npz.

    python -m cache.verifier_train --pairs PATH [--train-rows 30000] [--val-rows 5000] [--report-folds 5]

Uses only the first ``--train-rows`` rows (the rest stays held out for
``benchmarks/cache_eval.py --skip``). Pairs a veto rejects are left out: the model only ranks
the rest. Two families (see ``cache/verifier_model.py``), each an ensemble of seeds, trained
with torch on CPU (~3 min on 2 cores):

1. fit on the first ``train-rows - val-rows`` rows, score the last ``val-rows``, and pick the
   lowest threshold whose validation precision is at least ``--precision`` (margin for drift);
2. refit on all training rows with the same settings and ship that model with the threshold.

``--report-folds k`` adds an analysis: every training row scored by a model fitted without
its block, pooled precision/recall at the chosen threshold (a lower-variance estimate than
the single 5,000-row split).

Deterministic for a given torch build (seeded). Only weights are written, no row data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from cache.embedders import StaticEmbedder
from cache.verifier import Verifier
from cache.verifier_model import MODEL_FILE, SIF_A, PairModel, TokenSpace, pair_features
from cache.verifier_text import veto

F32 = npt.NDArray[np.float32]
MLP_SEEDS, PROJ_SEEDS = 4, 2


def sif_weights(space_ids: list[npt.NDArray[np.int64]], vocab: int) -> F32:
    counts = np.bincount(np.concatenate(space_ids), minlength=vocab).astype(np.float64)
    freq = counts / counts.sum()
    weights: F32 = (SIF_A / (SIF_A + freq)).astype(np.float32)
    return weights


def _head(n_in: int, hidden: int, drop: float, input_drop: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Dropout(input_drop), torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
                               torch.nn.Dropout(drop), torch.nn.Linear(hidden, 1))


def _export_head(prefix: str, head: torch.nn.Sequential, out: dict[str, F32]) -> None:
    first, last = cast(torch.nn.Linear, head[1]), cast(torch.nn.Linear, head[4])
    out[f"{prefix}_w1"] = first.weight.detach().numpy().T.copy()
    out[f"{prefix}_b1"] = first.bias.detach().numpy().copy()
    out[f"{prefix}_w2"] = last.weight.detach().numpy().T.copy()
    out[f"{prefix}_b2"] = last.bias.detach().numpy().copy()


def train_mlp(x: F32, y: F32, seed: int, epochs: int = 30) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    head = _head(x.shape[1], 128, 0.3, 0.15)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 256):
            b = perm[i:i + 256]
            opt.zero_grad()
            torch.autograd.backward(
                torch.nn.functional.binary_cross_entropy_with_logits(head(xt[b]).squeeze(1), yt[b]))
            opt.step()
    head.eval()
    return head


class ProjNet(torch.nn.Module):
    """Learned token weights + projection of the frozen static table, then a head."""

    def __init__(self, table: F32, sif: F32, n_feats: int) -> None:
        super().__init__()
        self.table = torch.tensor(table)
        self.logw = torch.nn.Parameter(torch.tensor(np.log(sif)))
        self.proj = torch.nn.Linear(table.shape[1], 256)
        self.head = _head(512 + n_feats, 128, 0.3, 0.0)

    def sent(self, ids: list[npt.NDArray[np.int64]]) -> torch.Tensor:
        rows = []
        for seq in ids:
            t = torch.from_numpy(seq)
            rows.append((self.table[t] * torch.exp(self.logw[t])[:, None]).sum(0))
        return torch.nn.functional.normalize(self.proj(torch.stack(rows)), dim=-1)

    def forward(self, ia: list[npt.NDArray[np.int64]], ib: list[npt.NDArray[np.int64]],
                feats: torch.Tensor) -> torch.Tensor:
        u, v = self.sent(ia), self.sent(ib)
        out: torch.Tensor = self.head(torch.cat([(u - v).abs() * 8, u * v * 8, feats], 1)).squeeze(1)
        return out


def train_proj(space: TokenSpace, ia: list[Any], ib: list[Any], feats: F32, y: F32, seed: int,
               epochs: int = 2) -> ProjNet:
    torch.manual_seed(seed)
    net = ProjNet(space.table, space.sif, feats.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-2)
    ft, yt = torch.tensor(feats), torch.tensor(y)
    rng = np.random.RandomState(seed)
    for _ in range(epochs):
        net.train()
        perm = rng.permutation(len(y))
        for i in range(0, len(perm), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            logits = net([ia[k] for k in b], [ib[k] for k in b], ft[b])
            torch.autograd.backward(torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[b]))
            opt.step()
    net.eval()
    return net


def fit(space: TokenSpace, data: dict[str, Any], rows: npt.NDArray[np.int64]) -> dict[str, F32]:
    """Train both families on ``rows`` (indices into ``data``); return the arrays to ship."""
    out: dict[str, F32] = {"sif": space.sif}
    feats = data["feats"][rows]
    out["fmu"], out["fsd"] = feats.mean(0), feats.std(0) + 1e-6
    fn = ((feats - out["fmu"]) / out["fsd"]).astype(np.float32)
    u, v = data["u"][rows], data["v"][rows]
    x = np.concatenate([fn, np.abs(u - v), u * v], 1).astype(np.float32)
    out["xmu"], out["xsd"] = x.mean(0), x.std(0) + 1e-6
    xn = ((x - out["xmu"]) / out["xsd"]).astype(np.float32)
    y = data["y"][rows]
    for seed in range(MLP_SEEDS):
        _export_head(f"mlp_{seed}", train_mlp(xn, y, seed), out)
        sys.stderr.write(f"mlp {seed} done\n")
    ia, ib = [data["ia"][k] for k in rows], [data["ib"][k] for k in rows]
    for seed in range(PROJ_SEEDS):
        net = train_proj(space, ia, ib, fn, y, seed)
        out[f"proj_{seed}_logw"] = net.logw.detach().numpy().copy()
        out[f"proj_{seed}_pw"] = net.proj.weight.detach().numpy().T.copy()
        out[f"proj_{seed}_pb"] = net.proj.bias.detach().numpy().copy()
        _export_head(f"proj_{seed}", net.head, out)
        sys.stderr.write(f"proj {seed} done\n")
    return out


def pick_threshold(scores: F32, labels: F32, precision: float, min_hits: int = 50) -> float:
    order = np.argsort(-scores)
    tp = np.cumsum(labels[order])
    prec = tp / np.arange(1, len(order) + 1)
    ok = [i for i in range(min_hits - 1, len(order)) if prec[i] >= precision]
    return float(scores[order[max(ok)]]) if ok else 0.99


def prepare_data(space: TokenSpace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    keep = list(rows)
    prep = [(space.prepare(r["text_a"]), space.prepare(r["text_b"])) for r in keep]
    vetoed = np.array([veto(a.parsed, b.parsed) is not None for a, b in prep])
    return {
        "feats": np.stack([pair_features(a, b) for a, b in prep]),
        "u": np.stack([a.sif_vec for a, _ in prep]), "v": np.stack([b.sif_vec for _, b in prep]),
        "ia": [a.ids for a, _ in prep], "ib": [b.ids for _, b in prep],
        "y": np.array([float(r["label"]) for r in keep], dtype=np.float32), "vetoed": vetoed,
        "prep": prep,
    }


def out_of_fold_scores(space: TokenSpace, data: dict[str, Any], usable: npt.NDArray[np.int64],
                       folds: int) -> F32:
    """Every training row scored by a model fitted without its fold (contiguous blocks)."""
    n = len(data["y"])
    scores = np.zeros(n, dtype=np.float32)
    for fold, block in enumerate(np.array_split(np.arange(n), folds)):
        arrays = fit(space, data, np.setdiff1d(usable, block))
        arrays["threshold"] = np.asarray(0.5, dtype=np.float32)
        verifier = Verifier(PairModel(space, arrays))
        scores[block] = [verifier.score_prepared(*data["prep"][k]) for k in block]
        sys.stderr.write(f"fold {fold + 1}/{folds} scored\n")
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--train-rows", type=int, default=30000)
    ap.add_argument("--val-rows", type=int, default=5000)
    ap.add_argument("--precision", type=float, default=0.92)
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    ap.add_argument("--report-folds", type=int, default=0,
                    help="also score every training row out-of-fold (k blocks) and report the "
                         "pooled precision/recall at the chosen threshold (analysis only, ~k more fits)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines()[: args.train_rows]]
    static = StaticEmbedder.load_or_distill()
    texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
    base = TokenSpace(static, np.ones(static.table.shape[0], np.float32))
    sif = sif_weights([base.ids(t) for t in texts], static.table.shape[0])
    space = TokenSpace(static, sif)
    data = prepare_data(space, rows)
    usable = np.flatnonzero(~data["vetoed"])
    split = len(rows) - args.val_rows
    arrays = fit(space, data, usable[usable < split])
    arrays["threshold"] = np.asarray(0.5, dtype=np.float32)
    verifier = Verifier(PairModel(space, arrays))
    val = np.arange(split, len(rows))
    scores = np.array([verifier.score_prepared(*data["prep"][k]) for k in val], dtype=np.float32)
    threshold = pick_threshold(scores, data["y"][val], args.precision)
    hits = scores >= threshold
    sys.stderr.write(f"validation: threshold {threshold:.3f} precision "
                     f"{data['y'][val][hits].mean():.3f} recall "
                     f"{data['y'][val][hits].sum() / data['y'][val].sum():.3f}\n")
    if args.report_folds > 1:
        oof = out_of_fold_scores(space, data, usable, args.report_folds)
        hits, y = oof >= threshold, data["y"]
        sys.stderr.write(f"out-of-fold ({args.report_folds} folds, all {len(y)} rows) at {threshold:.3f}: "
                         f"precision {y[hits].mean():.3f} recall {y[hits].sum() / y.sum():.3f}\n")
    final = fit(space, data, usable)
    final["threshold"] = np.asarray(threshold, dtype=np.float32)
    shipped: dict[str, Any] = {k: np.asarray(v, dtype=np.float16 if v.size > 1000 else np.float32)
                               for k, v in final.items()}
    np.savez_compressed(args.out, **shipped)
    sys.stdout.write(f"wrote {args.out} (threshold {threshold:.3f})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
