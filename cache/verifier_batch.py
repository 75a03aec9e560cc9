"""The verifier over a batch of pairs, vectorised: what the semantic cache's worker runs.

Same numbers as ``Verifier.score_prepared`` pair by pair (a test checks), at a fraction of the
cost: new texts are tokenised in one call and their sentence vectors pooled with one
``reduceat``; word alignment is one batched matmul over padded pairs; both MLP families run
once on the stacked batch. Per-pair Python is left only where set operations are the work
(vetoes, lexical overlaps). Not thread-safe: call from one thread (the cache worker).
"""

from __future__ import annotations

from itertools import accumulate, chain

import numpy as np
import numpy.typing as npt

from cache.sparse import rows_times_table
from cache.verifier import Verifier
from cache.verifier_model import _UNK, F32, MAX_TOKENS, Prepared, TextState, _lexical
from cache.verifier_text import Parsed, parse, trigram_sets, veto

Pair = tuple[Prepared, Prepared]


def _pooled(weights: F32, table: F32, ids: list[npt.NDArray[np.int64]]) -> F32:
    """(members, n, dim) for ``weights`` (members, vocab), or (n, dim) for (vocab,): per text,
    the ``weights[id]``-weighted sum of its token rows. One sparse (rows = texts x members,
    columns = vocabulary) by dense product: no gather of the token rows, no dense segment matrix."""
    flat = np.concatenate(ids)
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    w = np.atleast_2d(weights)
    members, total = len(w), len(flat)
    data = w[:, flat].reshape(-1)
    ptr = np.concatenate([indptr[:-1] + m * total for m in range(members)] + [[members * total]])
    out = rows_times_table(ptr, np.tile(flat, members), data, table).reshape(members, len(ids), -1)
    return out if weights.ndim > 1 else out[0]


def _id_arrays(tok_ids: list[list[int]]) -> list[npt.NDArray[np.int64]]:
    """Each text's ids (cut to ``MAX_TOKENS``, ``[_UNK]`` when empty) as views of one array:
    one conversion for the batch instead of one per text."""
    cut = [x[:MAX_TOKENS] or [_UNK] for x in tok_ids]
    ends = list(accumulate(len(x) for x in cut))
    flat = np.fromiter(chain.from_iterable(cut), dtype=np.int64, count=ends[-1] if ends else 0)
    return [flat[end - len(x):end] for x, end in zip(cut, ends, strict=True)]


def _unit_rows(x: F32) -> F32:
    out: F32 = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)
    return out


class BatchVerifier:
    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.model = verifier.model
        self.space = verifier.model.space
        # SIF and proj token weights stacked: a new text's sentence vectors of both families
        # come out of one pooling product.
        self._weights: F32 = np.concatenate([self.space.sif[None, :], self.model.proj_w])

    def prepare_many(self, texts: list[str], ids: list[list[int]] | None = None,
                     remember: bool = False, parsed: list[Parsed] | None = None) -> list[Prepared]:
        """Prepared texts (memo hits reused); ``ids``/``parsed``: token ids and parses already
        computed for them. Only texts not in the memo are tokenised and pooled, in one batch."""
        space = self.space
        out = [space.memo(t) for t in texts]
        missing = [i for i, p in enumerate(out) if p is None]
        if missing:
            tok_ids = [ids[i] for i in missing] if ids is not None else space.token_ids([texts[i] for i in missing])
            arrays = _id_arrays(tok_ids)
            pooled = _pooled(self._weights, space.table, arrays)  # (1 + members, n, dim)
            sif = _unit_rows(pooled[0])
            proj = np.ascontiguousarray(self.model.proj_vectors(pooled[1:]).transpose(1, 0, 2))  # (n, members, pdim)
            att = self.model.att_states(arrays)
            parses = [parsed[i] if parsed is not None else parse(texts[i]) for i in missing]
            space.word_vectors([w for p in parses for w in p.content])  # new words in one product
            trigrams = trigram_sets([p.squashed for p in parses])
            for j, i in enumerate(missing):
                out[i] = space.memo(texts[i]) or space.build(texts[i], arrays[j], sif[j], remember, parses[j],
                                                                   trigrams[j])
                if not self.model.has_state(texts[i]):
                    state = TextState(proj[j], att[j])  # a C-contiguous row of the copy above
                    self.model.keep_state(texts[i], state, remember)
        done = [p for p in out if p is not None]
        self._states_many(done, remember)  # remembered texts whose states were evicted
        return done

    def _states_many(self, preps: list[Prepared], remember: bool) -> None:
        model = self.model
        todo = [p for p in preps if not model.has_state(p.text)]
        if not todo:
            return
        ids = [p.ids for p in todo]
        proj, att = model.proj_vectors(_pooled(model.proj_w, self.space.table, ids)), model.att_states(ids)
        for k, p in enumerate(todo):
            model.keep_state(p.text, TextState(np.ascontiguousarray(proj[:, k, :]), att[k]), remember)

    def score_pairs(self, pairs: list[Pair], vetted: bool = False) -> F32:
        """Verifier score of each (cached, new) pair: vetoes 0, canonical equality 1, else the
        stacked model. ``vetted``: the caller already dropped every vetoed pair (the worker
        step vetoes on parses before preparing the new texts), so no veto is checked again."""
        out = np.zeros(len(pairs), dtype=np.float32)
        todo = []
        for k, (a, b) in enumerate(pairs):
            if not vetted and veto(a.parsed, b.parsed) is not None:
                continue
            if a.canonical and a.canonical == b.canonical:
                out[k] = 1.0
            else:
                todo.append(k)
        if todo:
            out[todo] = self.model_scores([pairs[k] for k in todo])
        return out

    def model_scores(self, pairs: list[Pair]) -> F32:
        u = np.array([a.sif_vec for a, _ in pairs], np.float32)  # np.array: np.stack's checks cost more
        v = np.array([b.sif_vec for _, b in pairs], np.float32)
        # Stacked (1 x dim) @ (dim x 1) products: each is the same dot as ``a.sif_vec @ b.sif_vec``.
        cosines = np.matmul(u[:, None, :], v[:, :, None])[:, 0, 0].tolist()
        lexical = [_lexical(a, b, cos) for (a, b), cos in zip(pairs, cosines, strict=True)]
        feats = np.concatenate([np.asarray(lexical, dtype=np.float32), align_many(pairs)], axis=1)
        return self.model.score_features(
            feats, u, v, [self.model.state(a) for a, _ in pairs], [self.model.state(b) for _, b in pairs])


def _coverage_many(best: F32, idf: F32, counts: npt.NDArray[np.int64]) -> F32:
    """(n pairs, 5): ``_coverage`` per pair; ``best``/``idf`` are the words of all pairs
    concatenated, pair by pair, ``counts`` each pair's number of words. Rows of pairs without
    words hold garbage: the caller overwrites them."""
    n = len(counts)
    if not len(best):
        return np.zeros((n, 5), dtype=np.float32)
    owner = np.repeat(np.arange(n), counts)
    count = np.maximum(counts, 1)
    # Each pair's words are one contiguous run: min/max per run with reduceat (exact, like
    # the ufunc.at scatter it replaces, at a fraction of its cost).
    starts = np.minimum(np.cumsum(counts) - counts, len(best) - 1)
    out: F32 = np.stack([
        np.minimum.reduceat(best, starts), np.bincount(owner, best, minlength=n) / count,
        np.bincount(owner, best < 0.5, minlength=n) / count,
        np.bincount(owner, best < 0.7, minlength=n) / count,
        np.maximum.reduceat(idf * (1.0 - best), starts),
    ], axis=1).astype(np.float32)
    return out


def align_many(pairs: list[Pair]) -> F32:
    """(pairs, 10): the alignment features of ``pair_features`` (min/max of the two sides), from
    one matmul of all pairs' content words masked to each pair's own block. Both sides'
    coverage comes from one ``_coverage_many`` call (its per-run sums keep their order, so
    the numbers are those of one call per side)."""
    n = len(pairs)
    sides = [a for a, _ in pairs] + [b for _, b in pairs]
    counts = np.asarray([len(p.content_idf) for p in sides], dtype=np.int64)
    na, nb = counts[:n], counts[n:]
    split = int(na.sum())
    vecs = np.concatenate([p.content_vecs for p in sides])
    owner = np.repeat(np.arange(2 * n) % n, counts)
    sims = vecs[:split] @ vecs[split:].T
    np.copyto(sims, np.float32(-np.inf), where=owner[:split, None] != owner[None, split:])
    best = np.concatenate([sims.max(axis=1, initial=-np.inf), sims.max(axis=0, initial=-np.inf)])
    with np.errstate(invalid="ignore"):
        cover = _coverage_many(best, np.concatenate([p.content_idf for p in sides]), counts)
    fa, fb = cover[:n], cover[n:]
    empty = np.asarray([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    full = np.asarray([1.0, 1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    for k in np.flatnonzero((na == 0) | (nb == 0)):
        fa[k] = full if na[k] == 0 else [*empty, pairs[k][0].content_idf.max()]
        fb[k] = full if nb[k] == 0 else [*empty, pairs[k][1].content_idf.max()]
    out: F32 = np.empty((n, 10), dtype=np.float32)
    out[:, 0::2] = np.minimum(fa, fb)
    out[:, 1::2] = np.maximum(fa, fb)
    return out
