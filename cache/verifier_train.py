"""Train the verifier's pair model and write cache/verifier_model.npz.

    python -m cache.verifier_train --pairs PATH [--rows 40000] [--folds 5] [--precision 0.91]

Every row is a training row; the operating point comes from predictions on rows the scoring
model never saw. Pairs a veto rejects are left out of fitting: the model only ranks the rest.
Three families (``cache/verifier_model.py``, ``cache/verifier_attention.py``) trained with
torch on CPU (~100 s per fit on 2 cores, ~12 min in all):

1. k-fold (contiguous blocks): fit on the other blocks, score the block → out-of-fold
   probabilities of the three families for every row;
2. the combiner (``verifier_model.combine``): a logistic regression on the three families'
   out-of-fold logits and the scalar pair features (pairs neither vetoed nor equal in
   wording); for the next step each block is combined by a combiner fitted without it;
3. the threshold: the lowest whose pooled out-of-fold precision, scored as served (vetoes 0,
   equal wording 1), is at least ``--precision``; the pooled out-of-fold precision/recall are
   printed (the expected held-out numbers; the shipped model saw 25% more rows than each fold's);
4. refit the families on all rows and ship them with the combiner and the threshold.

``--oof`` reuses the out-of-fold probabilities a previous run saved (steps 2-4 only).

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
from cache.verifier_fit import fit_bce
from cache.verifier_model import MODEL_FILE, SIF_A, PairModel, TokenSpace, combine, logit, pair_features
from cache.verifier_text import veto
from cache.verifier_train_attention import train_attention

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
    fit_bce(head, opt, lambda b: head(xt[b]).squeeze(1), yt, epochs=epochs, batch=256,
            order=lambda: torch.randperm(len(xt)))
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
    fit_bce(net, opt, lambda b: net([ia[k] for k in b], [ib[k] for k in b], ft[b]), yt, epochs=epochs,
            batch=128, order=lambda: rng.permutation(len(y)))
    return net


def fit(space: TokenSpace, data: dict[str, Any], rows: npt.NDArray[np.int64],
        attention: bool = True) -> dict[str, F32]:
    """Train the families (``attention``: the att family too) on ``rows`` (indices into
    ``data``); return the arrays to ship."""
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
    if attention:
        out.update(train_attention(space.table, space.sif, ia, ib, fn, y))
        sys.stderr.write("att done\n")
    return out


def pick_threshold(scores: F32, labels: F32, precision: float, min_hits: int = 50) -> float:
    order = np.argsort(-scores)
    tp = np.cumsum(labels[order])
    prec = tp / np.arange(1, len(order) + 1)
    ok = [i for i in range(min_hits - 1, len(order)) if prec[i] >= precision]
    return float(scores[order[max(ok)]]) if ok else 0.99


def prepare_data(space: TokenSpace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    prep = [(space.prepare(r["text_a"]), space.prepare(r["text_b"])) for r in rows]
    return {
        "feats": np.stack([pair_features(a, b) for a, b in prep]),
        "u": np.stack([a.sif_vec for a, _ in prep]), "v": np.stack([b.sif_vec for _, b in prep]),
        "ia": [a.ids for a, _ in prep], "ib": [b.ids for _, b in prep],
        "y": np.array([float(r["label"]) for r in rows], dtype=np.float32),
        "vetoed": np.array([veto(a.parsed, b.parsed) is not None for a, b in prep]),
        "equal": np.array([bool(a.canonical) and a.canonical == b.canonical for a, b in prep]),
        "prep": prep,
    }


FAMILIES = ("mlp", "proj", "att")


def family_probs(space: TokenSpace, arrays: dict[str, F32], data: dict[str, Any],
                 rows: npt.NDArray[np.int64]) -> F32:
    """(families, rows): every family's probabilities for ``rows`` under the fitted ``arrays``."""
    model = PairModel(space, {**arrays, "threshold": np.asarray(0.5, np.float32),
                              "combine": np.zeros(1, np.float32)})  # combine is not used here
    out = []
    for start in range(0, len(rows), 512):  # bounded padded attention batches
        part = rows[start:start + 512]
        prep = [data["prep"][k] for k in part]
        sa = [model.state(a) for a, _ in prep]
        sb = [model.state(b) for _, b in prep]
        out.append(np.stack(model.family_probs(data["feats"][part], data["u"][part], data["v"][part], sa, sb)))
    return np.concatenate(out, axis=1)


def out_of_fold(space: TokenSpace, data: dict[str, Any], usable: npt.NDArray[np.int64],
                folds: int) -> F32:
    """(families, rows): every row's family probabilities from a model fitted without its block."""
    n = len(data["y"])
    probs = np.zeros((len(FAMILIES), n), np.float32)
    for fold, block in enumerate(np.array_split(np.arange(n), folds)):
        arrays = fit(space, data, np.setdiff1d(usable, block), attention=True)
        probs[:, block] = family_probs(space, arrays, data, block)
        sys.stderr.write(f"fold {fold + 1}/{folds} scored\n")
    return probs


def fit_combiner(probs: F32, fn: F32, y: F32, l2: float = 1.0) -> F32:
    """``combine``'s weights: a logistic regression on the families' logits and the
    standardised pair features (Newton steps; L2 on all but the bias)."""
    x = np.concatenate([logit(probs).T, fn, np.ones((len(fn), 1))], axis=1).astype(np.float64)
    w = np.zeros(x.shape[1])
    penalty = np.full(len(w), l2)
    penalty[-1] = 0.0
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(penalty)
        w -= np.linalg.solve(hess, grad)
    return w.astype(np.float32)


def cross_fitted(probs: F32, fn: F32, y: F32, learn: npt.NDArray[np.int64], folds: int) -> F32:
    """Combined scores of every row from a combiner fitted without its block: the threshold
    and the reported precision/recall then rest on no row that fitted anything scoring it."""
    out = np.zeros(len(y), np.float32)
    for block in np.array_split(np.arange(len(y)), folds):
        rows = np.setdiff1d(learn, block)
        out[block] = combine(fit_combiner(probs[:, rows], fn[rows], y[rows]), list(probs[:, block]), fn[block])
    return out


def served(data: dict[str, Any], probs: F32) -> F32:
    """Scores as the verifier serves them: vetoes 0, equal wording 1, else the model."""
    out = np.where(data["equal"], 1.0, probs)
    return np.where(data["vetoed"], 0.0, out).astype(np.float32)


def _report(name: str, scores: F32, y: F32, threshold: float) -> None:
    hits = scores >= threshold
    sys.stderr.write(f"{name} at {threshold:.3f}: precision {y[hits].mean():.3f} "
                     f"recall {y[hits].sum() / y.sum():.3f}\n")


def report_families(data: dict[str, Any], probs: F32, precision: float) -> None:
    alone = [*zip(FAMILIES, probs, strict=True), ("geometric mean of mlp, proj", np.sqrt(probs[0] * probs[1]))]
    for name, family in alone:
        t = pick_threshold(served(data, family), data["y"], precision)
        _report(f"  {name} alone, its own threshold", served(data, family), data["y"], t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--rows", type=int, default=None, help="use the first N rows (default: all)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--precision", type=float, default=0.91, help="pooled out-of-fold precision to reach")
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    ap.add_argument("--oof", type=Path, default=None,
                    help="reuse the out-of-fold family probabilities a previous run saved (OUT.oof.npy, "
                         "same rows and folds) instead of refitting every fold")
    ap.add_argument("--attention", action=argparse.BooleanOptionalAction, default=False,
                    help="ship the attention family too (out-of-fold recall +0.013 at 0.91 precision, "
                         "but ~2 ms more per 16-lookup worker step on 2 cores: off by default)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()][: args.rows]
    static = StaticEmbedder.load_or_distill()
    texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
    base = TokenSpace(static, np.ones(static.table.shape[0], np.float32))
    space = TokenSpace(static, sif_weights([base.ids(t) for t in texts], static.table.shape[0]))
    data = prepare_data(space, rows)
    usable = np.flatnonzero(~data["vetoed"])
    if args.oof is not None:
        probs = np.load(args.oof)
    else:
        probs = out_of_fold(space, data, usable, args.folds)  # all families, for the comparison
        np.save(args.out.with_suffix(".oof.npy"), probs)  # for analysis and --oof; never shipped
    shipped_families = len(FAMILIES) if args.attention else 2
    report_families(data, probs, args.precision)
    probs = probs[:shipped_families]
    learn = np.flatnonzero(~data["vetoed"] & ~data["equal"])
    feats = data["feats"][usable]
    fn = ((data["feats"] - feats.mean(0)) / (feats.std(0) + 1e-6)).astype(np.float32)  # as ``fit`` ships
    combiner = fit_combiner(probs[:, learn], fn[learn], data["y"][learn])
    oof = served(data, cross_fitted(probs, fn, data["y"], learn, args.folds))
    threshold = pick_threshold(oof, data["y"], args.precision)
    sys.stderr.write(f"combiner (families, features, bias) {np.round(combiner, 3).tolist()}\n")
    _report(f"out-of-fold ({args.folds} folds, {len(rows)} rows)", oof, data["y"], threshold)
    final = fit(space, data, usable, attention=args.attention)
    final["threshold"] = np.asarray(threshold, dtype=np.float32)
    final["combine"] = combiner
    shipped: dict[str, Any] = {k: np.asarray(v, dtype=np.float16 if v.size > 1000 else np.float32)
                               for k, v in final.items()}
    np.savez_compressed(args.out, **shipped)
    sys.stdout.write(f"wrote {args.out} (threshold {threshold:.3f})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
