"""Contextual refinement of the static token table (what ``StaticEmbedder`` averages).

    python -m cache.static_context --pairs PATH [--rows 30000] [--min-count 2]

The distilled table holds each token's model output *alone* ("[CLS] tok [SEP]"); in real
questions a token's output depends on its context. This runs the full all-MiniLM-L6-v2 once
over the training questions (the first ``--rows`` rows of the pairs file, both sides; never the
held-out rows) and averages each token's contextual output vectors. A token seen ``n`` times
gets ``unit(n * ctx + PRIOR * alone)`` (shrunk towards its alone-vector when rare); tokens seen
fewer than ``--min-count`` times keep the alone-vector. Only the changed rows are shipped
(``cache/static_context.npz``, int8 with a per-row scale); the verifier's token table uses
them (``cache.verifier_model.verifier_table``), the first stage keeps the plain table.
~5-10 min on 2 CPU cores, run under ``nice``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CONTEXT_FILE = Path(__file__).with_name("static_context.npz")
PRIOR = 2.0

F32 = npt.NDArray[np.float32]


I64 = npt.NDArray[np.int64]


def collect(texts: list[str], model_path: Path, batch: int = 128) -> tuple[I64, F32, I64]:
    """(token ids seen, sum of their contextual output vectors, counts); special tokens skipped."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(2)
    tok: Any = AutoTokenizer.from_pretrained(str(model_path))
    model: Any = AutoModel.from_pretrained(str(model_path)).eval()
    vocab = int(model.config.vocab_size)
    sums = np.zeros((vocab, int(model.config.hidden_size)), np.float64)
    counts = np.zeros(vocab, np.int64)
    ordered = sorted(set(texts), key=len)
    with torch.inference_mode():
        for i in range(0, len(ordered), batch):
            enc = tok(ordered[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state.numpy()
            ids = enc["input_ids"].numpy()
            keep = enc["attention_mask"].numpy().astype(bool) & (ids != tok.cls_token_id) & (ids != tok.sep_token_id)
            np.add.at(sums, ids[keep], hidden[keep])
            np.add.at(counts, ids[keep], 1)
            if i % (batch * 50) == 0:
                sys.stderr.write(f"{i}/{len(ordered)}\n")
    seen = np.flatnonzero(counts)
    return seen, sums[seen].astype(np.float32), counts[seen]


def refined_rows(alone: F32, ids: I64, sums: F32, counts: I64, min_count: int) -> tuple[I64, F32]:
    keep = counts >= min_count
    ids, sums, counts = ids[keep], sums[keep], counts[keep]
    ctx = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    n = counts[:, None].astype(np.float32)
    rows = n * ctx + PRIOR * alone[ids]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return ids, rows.astype(np.float32)


def save(path: Path, ids: npt.NDArray[np.int64], rows: F32) -> None:
    scale = np.abs(rows).max(axis=1) / 127.0
    np.savez_compressed(path, ids=ids.astype(np.int32), q=np.round(rows / scale[:, None]).astype(np.int8),
                        scale=scale.astype(np.float32))


def load(path: Path) -> tuple[npt.NDArray[np.int64], F32]:
    with np.load(path) as data:
        rows = data["q"].astype(np.float32) * data["scale"][:, None]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return data["ids"].astype(np.int64), rows


def main(argv: list[str] | None = None) -> int:
    from cache.embedders import StaticEmbedder, minilm_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, type=Path)
    ap.add_argument("--rows", type=int, default=30000, help="training rows only (held-out rows start here)")
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--out", type=Path, default=CONTEXT_FILE)
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines()[: args.rows]]
    texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
    ids, sums, counts = collect(texts, minilm_path())
    alone = StaticEmbedder.load_or_distill().table
    kept, refined = refined_rows(alone, ids, sums, counts, args.min_count)
    save(args.out, kept, refined)
    sys.stdout.write(f"wrote {args.out}: {len(kept)} refined token rows\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
