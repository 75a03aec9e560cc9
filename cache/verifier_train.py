"""Train the verifier's logistic weights on labelled pairs and write verifier_weights.json.

    python -m cache.verifier_train --pairs PATH [--train-rows 30000] [--out cache/verifier_weights.json]

Uses the first ``--train-rows`` rows (the rest stays held out for benchmarks/cache_eval.py
``--skip``). Pairs a veto already rejects are left out of training: the model only has to
rank the remaining ones. Plain numpy IRLS with an L2 penalty; deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cache.embedders import StaticEmbedder
from cache.verifier import FEATURES, WEIGHTS_FILE, features, parse, veto


def fit_logistic(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], l2: float = 1.0,
                 iters: int = 30) -> npt.NDArray[np.float64]:
    w = np.zeros(x.shape[1])
    penalty = l2 * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--train-rows", type=int, default=30000)
    ap.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines()[: args.train_rows]]
    emb = StaticEmbedder.load_or_distill()
    va = emb.encode([r["text_a"] for r in rows])
    vb = emb.encode([r["text_b"] for r in rows])
    xs, ys = [], []
    for r, a_vec, b_vec in zip(rows, va, vb, strict=True):
        a, b = parse(r["text_a"]), parse(r["text_b"])
        if veto(a, b) is None:
            xs.append(features(a, b, float(a_vec @ b_vec)))
            ys.append(float(r["label"]))
    w = fit_logistic(np.array(xs), np.array(ys))
    args.out.write_text(json.dumps({
        "features": list(FEATURES), "weights": [round(float(v), 5) for v in w],
        "trained_on": f"{args.pairs.name} rows 0..{args.train_rows} ({len(ys)} after vetoes)",
    }, indent=1) + "\n")
    sys.stdout.write(f"wrote {args.out}: {dict(zip(FEATURES, np.round(w, 3), strict=True))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
