"""The learned part of the verifier: pair features and a numpy MLP ensemble.

Contract: ``PairModel.score(a, b)`` is the probability that ``a`` and ``b`` ask the same
question, from features that capture what changed between them:

- lexical: word/content/trigram/bigram overlap, question word, entities,
  numbers present in one text only, lengths, first/last word agreement;
- word alignment: for each content word of one text, its best cosine match among the other's
  (static token vectors); min, mean, share below 0.5/0.7 and the rarest unmatched word — an
  unmatched concept is the classic near-miss signal;
- sentence vectors of both texts as ``[|u-v|, u*v]``, from the static MiniLM token table with
  SIF weighting (family ``mlp``) and from a learned token weighting + projection (``proj``).

The score is a logistic regression on the two families' mean-probability logits (fitted on
out-of-fold predictions). Weights come from ``cache/verifier_train.py`` (torch, CPU) and ship
as ``verifier_model.npz``; inference is numpy only, batched in the cache worker.
``TokenSpace`` needs the distilled static table (``StaticEmbedder``) whatever embedder the
first stage uses, so scores do not depend on it.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from cache.embedders import StaticEmbedder
from cache.sparse import rows_times_table
from cache.verifier_attention import AttentionFamily, TokenStates
from cache.verifier_text import Parsed, jaccard, parse, trigram_sets

MODEL_FILE = Path(__file__).with_name("verifier_model.npz")
SIF_A = 1e-3
MAX_TOKENS = 128
_ALNUM = re.compile(r"[a-z0-9]+")
_UNK = 100
_CONTRACTIONS = (("'s", " is"), ("'re", " are"), ("n't", " not"), ("'m", " am"), ("'ll", " will"),
                 ("'ve", " have"), ("'d", " would"))
# Words whose presence does not change a question ("how do I" = "how can I", "my"/"the" acne);
# pairs equal without them are 96% duplicates in the QQP training rows.
_NEUTRAL = frozenset("do does did can could the a an my please".split())

F32 = npt.NDArray[np.float32]


class TextState(NamedTuple):
    """Per-text model state beyond ``Prepared``: kept for cached questions."""

    proj: F32  # (proj members, pdim) unit vectors
    att: TokenStates | None  # None when the model has no attention family


def _unit(x: F32) -> F32:
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else x


class Prepared(NamedTuple):
    """Everything about one text the pair features need; computed once per text. Immutable
    (NamedTuples here: built per new text on the lookup path, ~4x cheaper than a frozen
    dataclass)."""

    text: str
    parsed: Parsed
    ids: npt.NDArray[np.int64]
    sif_vec: F32
    alnum: tuple[str, ...]
    canonical: tuple[str, ...]  # contractions expanded, neutral words dropped
    content_vecs: F32  # (n content words, dim), unit rows, sorted content words
    content_idf: F32
    bigrams: frozenset[tuple[str, str]]  # of ``alnum``
    trigrams: frozenset[int]  # character trigrams of ``parsed.squashed`` (``trigram_sets``)
    content_seq: tuple[str, ...]  # ``alnum`` words that are content words, in order


def canonical(text: str, alnum: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``alnum``: the text's ``_ALNUM`` words of ``text.lower()``, if already split. Without an
    apostrophe no contraction can be expanded, so they are the words to filter."""
    if alnum is not None and "'" not in text and "\u2019" not in text:
        return tuple([w for w in alnum if w not in _NEUTRAL])  # a list first: cheaper than a generator
    lowered = text.lower().replace("\u2019", "'")
    for short, long in _CONTRACTIONS:
        lowered = lowered.replace(short, long)
    return tuple([w for w in _ALNUM.findall(lowered) if w not in _NEUTRAL])


class TokenSpace:
    """Centered static token vectors, SIF token weights and a bounded memo of prepared texts."""

    def __init__(self, static: StaticEmbedder, sif: F32, memo_size: int = 4096) -> None:
        table = static.table
        centered = table - table.mean(axis=0)
        self.table: F32 = (centered / (np.linalg.norm(centered, axis=1, keepdims=True) + 1e-9)).astype(np.float32)
        self.sif = sif.astype(np.float32)
        freq = SIF_A * (1.0 / np.clip(self.sif, 1e-9, None) - 1.0)
        self.idf: F32 = (-np.log(np.clip(freq, 1e-7, None))).astype(np.float32)
        self._tok = static.tokenizer
        self._static = static
        self._words: dict[str, tuple[F32, float]] = {}
        self._memo: OrderedDict[str, Prepared] = OrderedDict()
        self._memo_size = memo_size

    def ids(self, text: str) -> npt.NDArray[np.int64]:
        ids = self._tok.encode(text, add_special_tokens=False).ids[:MAX_TOKENS]
        return np.asarray(ids or [_UNK], dtype=np.int64)

    def word_vectors(self, words: list[str]) -> list[tuple[F32, float]]:
        """Each word's unit mean token vector and mean idf. Words not memoised yet are
        computed together (one sparse words x vocabulary product, ids from the static
        embedder's memoised word-pieces): a new word cost ~15 us of numpy calls on its own."""
        known = self._words
        try:  # all memoised: the usual case on the lookup path
            return [known[w] for w in words]
        except KeyError:
            pass
        missing = sorted({w for w in words if w not in known})
        fresh: dict[str, tuple[F32, float]] = {}
        if missing:
            ids = [x[:MAX_TOKENS] or [_UNK] for x in self._static.token_ids(missing)]
            lens = np.asarray([len(x) for x in ids], dtype=np.int64)
            flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids])
            starts = np.concatenate([[0], np.cumsum(lens)])
            vecs = rows_times_table(starts, flat, np.repeat(1.0 / lens, lens).astype(np.float32), self.table)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            idf = np.add.reduceat(self.idf[flat], starts[:-1]) / lens
            for word, vec, weight in zip(missing, vecs, idf, strict=True):
                fresh[word] = (vec, float(weight))
                if len(known) < 50_000:
                    known[word] = fresh[word]
        return [known.get(w) or fresh[w] for w in words]

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of a batch (the static embedder's fast path; same ids as ``ids``)."""
        return self._static.token_ids(texts)

    def memo(self, text: str) -> Prepared | None:
        """The remembered preparation of ``text``, if any (refreshes its LRU position)."""
        hit = self._memo.get(text)
        if hit is not None:
            self._memo.move_to_end(text)
        return hit

    def prepare(self, text: str, remember: bool = False) -> Prepared:
        """``remember``: keep it in the LRU memo (cached questions); one-off queries are not
        kept, so they cannot push cached questions out."""
        hit = self.memo(text)
        if hit is not None:
            return hit
        ids = self.ids(text)
        return self.build(text, ids, _unit(self.sif[ids] @ self.table[ids]), remember)

    def build(self, text: str, ids: npt.NDArray[np.int64], sif_vec: F32, remember: bool,
              parsed: Parsed | None = None, trigrams: frozenset[int] | None = None) -> Prepared:
        """A ``Prepared`` from its token ids and SIF sentence vector (computed by the caller,
        possibly for a whole batch at once, as ``parsed`` and ``trigrams`` may be)."""
        parsed = parsed or parse(text)
        if trigrams is None:
            trigrams = trigram_sets([parsed.squashed])[0]
        words = self.word_vectors(sorted(parsed.content))
        dim = self.table.shape[1]
        alnum = tuple(_ALNUM.findall(text.lower()))
        prepared = Prepared(
            text=text, parsed=parsed, ids=ids, sif_vec=sif_vec, alnum=alnum, canonical=canonical(text, alnum),
            # np.array, not np.stack: same rows, without np.stack's Python-level checks (~8 us).
            content_vecs=np.array([w[0] for w in words], np.float32) if words else np.zeros((0, dim), np.float32),
            content_idf=np.asarray([w[1] for w in words], dtype=np.float32),
            bigrams=_bigrams(alnum), content_seq=tuple([w for w in alnum if w in parsed.content]), trigrams=trigrams,
        )
        if remember:
            self._memo[text] = prepared
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return prepared


def _coverage(best: F32, idf: F32) -> list[float]:
    """How well one text's content words are covered (``best``: each word's best cosine in
    the other text): min, mean, share < 0.5, share < 0.7, the largest idf-weighted miss."""
    n = len(best)
    return [float(best.min()), float(best.sum()) / n, np.count_nonzero(best < 0.5) / n,
            np.count_nonzero(best < 0.7) / n, float((idf * (1.0 - best)).max())]


def _align(a: Prepared, b: Prepared) -> tuple[list[float], list[float]]:
    """(coverage of a's content words by b's, coverage of b's by a's)."""
    na, nb = len(a.content_vecs), len(b.content_vecs)
    if not na or not nb:
        empty, full = [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0, 0.0]
        fa = full if not na else [*empty, float(a.content_idf.max())]
        fb = full if not nb else [*empty, float(b.content_idf.max())]
        return fa, fb
    sims = a.content_vecs @ b.content_vecs.T
    return _coverage(sims.max(axis=1), a.content_idf), _coverage(sims.max(axis=0), b.content_idf)


def _bigrams(words: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """Word pairs as tuples: ``alnum`` words hold no space, so (x, y) stands for "x y" one to
    one (same Jaccard) without formatting a string per pair."""
    return frozenset(zip(words, words[1:], strict=False))


def _lexical(a: Prepared, b: Prepared, cosine: float | None = None) -> list[float]:
    """``cosine``: ``a.sif_vec @ b.sif_vec`` if the caller computed it (batched)."""
    pa, pb = a.parsed, b.parsed
    na, nb = max(1, len(pa.words)), max(1, len(pb.words))
    ca, cb = a.content_seq, b.content_seq
    return [
        float(a.sif_vec @ b.sif_vec) if cosine is None else cosine,
        jaccard(pa.lower, pb.lower), jaccard(pa.content, pb.content),
        min(na, nb) / max(na, nb), jaccard(a.trigrams, b.trigrams), float(pa.wh != pb.wh),
        float(len(pa.entities ^ pb.entities)), float(bool(pa.numbers) != bool(pb.numbers)),
        math.log1p(min(na, nb)), math.log1p(max(na, nb)),
        jaccard(a.bigrams, b.bigrams),
        float(a.alnum[:1] == b.alnum[:1]), float(a.alnum[:2] == b.alnum[:2]),
        float(a.alnum[-1:] == b.alnum[-1:]), float(ca[-1:] == cb[-1:]), float(ca[:1] == cb[:1]),
    ]


def pair_features(a: Prepared, b: Prepared) -> F32:
    """Symmetric scalar features of a pair (lexical + alignment), unstandardised."""
    fa, fb = _align(a, b)
    aligned = [v for pair in zip(fa, fb, strict=True) for v in (min(pair), max(pair))]
    return np.asarray(_lexical(a, b) + aligned, dtype=np.float32)


def _clip(x: F32, lo: float, hi: float) -> F32:
    """``np.clip`` for float arrays (same values, NaN kept) without its Python-level dispatch,
    which cost more than the clipping of a batch of pairs (5 calls per worker step)."""
    out: F32 = np.minimum(np.maximum(x, lo), hi)
    return out


def _mean_sigmoid(z: F32) -> F32:
    """(pairs, members) logits → (pairs,) mean probability."""
    # sum / n is what ``mean`` computes (same float32 sum, same division), without its wrapper.
    out: F32 = (1.0 / (1.0 + np.exp(-_clip(z, -30.0, 30.0)))).sum(axis=-1) / z.shape[-1]
    return out


def logit(p: F32) -> F32:
    q = _clip(p, 1e-6, 1.0 - 1e-6)
    out: F32 = np.log(q / (1.0 - q))
    return out


def combine(weights: F32, probs: list[F32], fn: F32) -> F32:
    """The pair probability from the families' probabilities (mlp, proj[, att]) and the
    standardised scalar pair features ``fn`` (pairs, f): a logistic regression on
    ``[logit(p) per family, fn]`` (``weights``: one per family, one per feature, then the
    bias), fitted on out-of-fold predictions by the trainer. Learned rather than a fixed
    geometric mean: the families are not equally reliable, a weak one that errs on other pairs
    still helps, and how far to trust them depends on the pair (overlap, alignment, lengths)."""
    k = len(probs)
    z = weights[-1] + sum(w * logit(p) for w, p in zip(weights[:k], probs, strict=True)) + fn @ weights[k:-1]
    out: F32 = (1.0 / (1.0 + np.exp(-_clip(z, -30.0, 30.0)))).astype(np.float32)
    return out


class _Heads:
    """Ensemble members' one-hidden-layer heads stacked into single matrices (one matmul)."""

    def __init__(self, arrays: dict[str, F32], prefix: str, members: list[str]) -> None:
        self.n = len(members)
        self.w1 = np.concatenate([arrays[f"{prefix}_{m}_w1"] for m in members], axis=1)
        self.b1 = np.concatenate([arrays[f"{prefix}_{m}_b1"] for m in members])
        self.w2 = np.stack([arrays[f"{prefix}_{m}_w2"][:, 0] for m in members])  # (n, hidden)
        self.b2 = np.asarray([float(arrays[f"{prefix}_{m}_b2"][0]) for m in members], dtype=np.float32)

    def logits(self, pre: F32) -> F32:
        """``pre``: first-layer pre-activations, (pairs, n * hidden) or (pairs, n, hidden)."""
        hidden = np.maximum(pre.reshape(len(pre), self.n, -1), 0.0)
        out: F32 = np.einsum("pnh,nh->pn", hidden, self.w2) + self.b2
        return out


class PairModel:
    def __init__(self, space: TokenSpace, arrays: dict[str, F32], memo_size: int = 4096) -> None:
        self.space = space
        self._a = arrays
        mlp = sorted({k.split("_")[1] for k in arrays if k.startswith("mlp_")})
        proj = sorted({k.split("_")[1] for k in arrays if k.startswith("proj_")})
        if not mlp or not proj:
            raise ValueError("verifier model needs at least one mlp and one proj member")
        self.threshold = float(arrays["threshold"])
        self.combiner: F32 = arrays["combine"]
        self._mlp = _Heads(arrays, "mlp", mlp)
        self._proj = _Heads(arrays, "proj", proj)
        dim = int(arrays[f"proj_{proj[0]}_pw"].shape[1])
        w1 = self._proj.w1.reshape(-1, len(proj), self._proj.w1.shape[1] // len(proj))
        # (members, dim, hidden) copies: matmul on the transposed views copied them every call.
        self._proj_diff = np.ascontiguousarray(w1[:dim].transpose(1, 0, 2))
        self._proj_prod = np.ascontiguousarray(w1[dim:2 * dim].transpose(1, 0, 2))
        self._proj_feats = np.ascontiguousarray(w1[2 * dim:].reshape(len(w1) - 2 * dim, -1))
        self.proj_w: F32 = np.exp(np.stack([arrays[f"proj_{m}_logw"] for m in proj]))  # token weights
        self.proj_pw = np.stack([arrays[f"proj_{m}_pw"] for m in proj])
        self.proj_pb = np.stack([arrays[f"proj_{m}_pb"] for m in proj])
        self.att = AttentionFamily(arrays, space.table) if "att_f_w" in arrays else None
        self._states: OrderedDict[str, TextState] = OrderedDict()
        self._oneoff: list[str] = []
        self._memo_size = memo_size

    @classmethod
    def load(cls, static: StaticEmbedder | None = None, path: Path = MODEL_FILE,
             memo_size: int = 4096) -> PairModel:
        with np.load(path) as data:
            arrays = {k: data[k].astype(np.float32) for k in data.files}
        space = TokenSpace(static or StaticEmbedder.load_or_distill(), arrays["sif"], memo_size)
        return cls(space, arrays, memo_size)

    def has_state(self, text: str) -> bool:
        return text in self._states

    def keep_state(self, text: str, state: TextState, remember: bool) -> None:
        """Store a text's state computed elsewhere (batched); one-off texts are kept only
        until 256 more one-off texts were stored."""
        self._states[text] = state
        if not remember:
            self._oneoff.append(text)
            while len(self._oneoff) > 256:
                self._states.pop(self._oneoff.pop(0), None)
        elif len(self._states) > self._memo_size:
            self._states.popitem(last=False)

    def proj_vectors(self, pooled: F32) -> F32:
        """(members, n, pdim) unit ``proj`` vectors from (members, n, dim) pooled token rows."""
        vecs: F32 = np.matmul(pooled, self.proj_pw) + self.proj_pb[:, None, :]
        vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True) + 1e-9
        return vecs

    def state(self, p: Prepared, remember: bool = False) -> TextState:
        """The ``proj`` vectors (members, pdim) and attention token states of one text
        (memoised when ``remember``)."""
        hit = self._states.get(p.text)
        if hit is not None:
            self._states.move_to_end(p.text)
            return hit
        pooled = self.proj_w[:, p.ids] @ self.space.table[p.ids]
        state = TextState(self.proj_vectors(pooled[:, None, :])[:, 0, :], self.att_states([p.ids])[0])
        if remember:
            self.keep_state(p.text, state, True)
        return state

    def family_probs(self, feats: F32, u: F32, v: F32, sa: list[TextState], sb: list[TextState],
                     fn: F32 | None = None) -> list[F32]:
        """Each family's probability for a batch of pairs, from raw pair features (pairs, f),
        SIF vectors (pairs, dim) and both texts' states (``fn``: the standardised features,
        if the caller has them)."""
        arr = self._a
        fn = (feats - arr["fmu"]) / arr["fsd"] if fn is None else fn
        x = (np.concatenate([fn, np.abs(u - v), u * v], axis=1) - arr["xmu"]) / arr["xsd"]
        p_mlp = _mean_sigmoid(self._mlp.logits(x @ self._mlp.w1 + self._mlp.b1))
        m = self._proj.n
        pu, pv = np.array([s.proj for s in sa], np.float32), np.array([s.proj for s in sb], np.float32)
        d8, p8 = (np.abs(pu - pv) * 8.0).transpose(1, 0, 2), (pu * pv * 8.0).transpose(1, 0, 2)
        pre = (np.matmul(d8, self._proj_diff) + np.matmul(p8, self._proj_prod)
               + np.matmul(fn, self._proj_feats).reshape(len(fn), m, -1).transpose(1, 0, 2)
               + self._proj.b1.reshape(m, 1, -1))  # (members, pairs, hidden)
        p_proj = _mean_sigmoid(self._proj.logits(pre.transpose(1, 0, 2)))
        if self.att is None:
            return [p_mlp, p_proj]
        pairs = [(a.att, b.att) for a, b in zip(sa, sb, strict=True) if a.att is not None and b.att is not None]
        return [p_mlp, p_proj, self.att.probs(pairs, fn.astype(np.float32))]

    def att_states(self, ids: list[npt.NDArray[np.int64]]) -> list[TokenStates | None]:
        """Attention token states of a batch of texts (None without an attention family)."""
        return list(self.att.states(ids)) if self.att is not None else [None] * len(ids)

    def score_features(self, feats: F32, u: F32, v: F32, sa: list[TextState], sb: list[TextState]) -> F32:
        """Scores of a batch of pairs (see ``family_probs``): every family on the stacked
        batch, combined by ``combine``."""
        fn = ((feats - self._a["fmu"]) / self._a["fsd"]).astype(np.float32)
        return combine(self.combiner, self.family_probs(feats, u, v, sa, sb, fn), fn)

    def score(self, a: Prepared, b: Prepared) -> float:
        feats = pair_features(a, b)[None, :]
        return float(self.score_features(feats, a.sif_vec[None, :], b.sif_vec[None, :],
                                         [self.state(a)], [self.state(b)])[0])
