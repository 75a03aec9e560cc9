"""Semantic cache: embedding search (first stage) + the verifier (second stage).

Answers live in the ``Store`` under ``{scope}|s|{uid}``; the index only holds questions.
A candidate is served when its cosine is at least ``min_similarity`` and the verifier's
probability that the cached answer fits the new question is at least the route's threshold.
With a ``sync`` (Redis), every add/remove is published so all replicas keep the same index,
and a starting replica loads the entries persisted in Redis.

Threading contract: the whole semantic lookup (tokenise → embed → faiss search → verifier
features → both MLP families) runs in the cache's single worker thread as ONE step per batch
of concurrent lookups (``MicroBatcher``); the event loop only enqueues, awaits and then reads
the store. ``put`` prepares the cached question for the verifier in the same thread, so model
state (memos, token tables) is only ever touched there.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from cache.batcher import BatchingEmbedder, MicroBatcher
from cache.embedders import StaticEmbedder, Vectors
from cache.index import Entry, SemanticIndex
from cache.stores import Store
from cache.sync import EntryMeta, IndexSync
from cache.verifier import Verifier
from cache.verifier_batch import BatchVerifier
from cache.verifier_text import parse, veto

LOOKUP_BATCH = 16  # lookups per worker step: smaller batches return the first callers sooner
RECENT = 4096  # vectors of recently looked-up texts, reused by ``put``


class Candidate(NamedTuple):
    entry: Entry
    similarity: float
    score: float  # verifier probability; 0.0 when a veto fired


class SemanticCache:
    def __init__(self, store: Store, embedder: BatchingEmbedder, index: SemanticIndex,
                 verifier: Verifier | None, min_similarity: float, top_k: int = 4, verify_k: int = 2,
                 sync: IndexSync | None = None, clock: Callable[[], float] = time.time,
                 lookup_batch: int = LOOKUP_BATCH) -> None:
        self.store = store
        self.embedder = embedder
        self.index = index
        self.verifier = verifier
        self.min_similarity = min_similarity
        self.top_k = top_k
        self.verify_k = verify_k  # candidates the verifier scores per lookup
        self.sync = sync
        self._clock = clock
        self._batch = BatchVerifier(verifier) if verifier is not None else None
        inner = embedder.embedder
        self._static = inner if isinstance(inner, StaticEmbedder) else None
        self._recent: OrderedDict[str, Vectors] = OrderedDict()  # event loop only
        self._lookups: MicroBatcher[tuple[str, str], tuple[Candidate | None, Vectors]] = MicroBatcher(
            self._probe_batch, embedder.pool, lookup_batch)
        self._puts: MicroBatcher[str, Vectors] = MicroBatcher(self._put_batch, embedder.pool, embedder.max_batch)

    @property
    def batches(self) -> int:
        """Worker steps run for lookups (tests, benchmarks)."""
        return self._lookups.batches

    async def probe(self, scope: str, text: str) -> Candidate | None:
        """Best-scoring candidate in ``scope`` (no threshold applied beyond min_similarity)."""
        cand, vec = await self._lookups.submit((scope, text))
        self._recent[text] = vec  # a miss is usually followed by a put of the same question
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return cand

    # --- worker thread -------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> tuple[Vectors, list[list[int]] | None]:
        """Vectors and, with the static embedder, the token ids (reused by the verifier)."""
        if self._static is not None:
            ids = self._static.token_ids(texts)
            return self._static.encode_ids(ids), ids
        return self.embedder.embedder.encode(texts), None

    def _probe_batch(self, items: list[tuple[str, str]]) -> list[tuple[Candidate | None, Vectors]]:
        texts = [t for _, t in items]
        vecs, ids = self._encode(texts)
        found = self.index.search_many([s for s, _ in items], vecs, self.top_k)
        pairs: list[tuple[int, Entry, float]] = []
        for i, cands in enumerate(found):
            for rank, (entry, sim) in enumerate(cands):
                if sim < self.min_similarity or (self._batch is not None and rank >= self.verify_k):
                    break
                pairs.append((i, entry, sim))
        scores = self._scores(texts, ids, pairs)
        best: list[Candidate | None] = [None] * len(items)
        for (i, entry, sim), score in zip(pairs, scores, strict=True):
            cur = best[i]
            if cur is None or score > cur.score:
                best[i] = Candidate(entry, sim, float(score))
        return list(zip(best, vecs, strict=True))  # rows of a C-contiguous array: contiguous views

    def _scores(self, texts: list[str], ids: list[list[int]] | None,
                pairs: list[tuple[int, Entry, float]]) -> list[float]:
        if self._batch is None or not pairs:
            return [sim for _, _, sim in pairs]
        cached = self._batch.prepare_many([e.text for _, e, _ in pairs], remember=True)
        # A vetoed pair scores 0 whatever the model says: parse the new texts first and fully
        # prepare only those with a pair left to score (about a fifth of QQP pairs are vetoed).
        parsed = {i: parse(texts[i]) for i in sorted({i for i, _, _ in pairs})}
        live = [k for k, (c, (i, _, _)) in enumerate(zip(cached, pairs, strict=True))
                if veto(c.parsed, parsed[i]) is None]
        asked = sorted({pairs[k][0] for k in live})
        queries = self._batch.prepare_many([texts[i] for i in asked], None if ids is None else [ids[i] for i in asked],
                                           parsed=[parsed[i] for i in asked])
        by_row = dict(zip(asked, queries, strict=True))
        scores = [0.0] * len(pairs)
        scored = self._batch.score_pairs([(cached[k], by_row[pairs[k][0]]) for k in live], vetted=True)
        for k, score in zip(live, scored, strict=True):
            scores[k] = float(score)
        return scores

    def _put_batch(self, texts: list[str]) -> list[Vectors]:
        vecs, ids = self._encode(texts)
        if self._batch is not None:
            self._batch.prepare_many(texts, ids, remember=True)  # once, off the lookup path
        return [np.ascontiguousarray(row) for row in vecs]

    # --- event loop ----------------------------------------------------------------------

    async def lookup(self, scope: str, text: str, threshold: float) -> tuple[str, bytes] | None:
        cand = await self.probe(scope, text)
        if cand is None or cand.score < threshold:
            return None
        body = await self.store.get(cand.entry.key)
        if body is None:  # evicted or expired in the store: forget it everywhere
            await self.remove(cand.entry.key)
            return None
        self.index.touch(cand.entry.key)
        return cand.entry.key, body

    async def put(self, scope: str, text: str, body: bytes, ttl: float) -> str:
        vec = self._recent.pop(text, None)  # its verifier preparation then happens at first use
        if vec is None:
            vec = await self._puts.submit(text)
        same = [e for e, _ in self.index.search(scope, vec, 2) if e.text == text]
        key = same[0].key if same else f"{scope}|s|{uuid.uuid4().hex}"
        expires = self._clock() + ttl
        await self.store.set(key, body, ttl)
        self.index.add(key, scope, text, vec, expires)
        if self.sync is not None:
            await self.sync.publish_add(EntryMeta(key, scope, text, vec, expires), ttl)
        return key

    async def remove(self, key: str) -> bool:
        found = self.index.remove(key)
        await self.store.delete(key)
        if self.sync is not None:
            await self.sync.publish_remove(key)
        return found

    async def remove_prefix(self, prefix: str) -> int:
        count = self.index.remove_prefix(prefix)
        if self.sync is not None:
            await self.sync.publish_remove_prefix(prefix)
        return count

    def apply(self, meta: EntryMeta) -> None:
        """Add an entry announced by another replica (or loaded at start)."""
        if meta.expires_at > self._clock():
            self.index.add(meta.key, meta.scope, meta.text, meta.vector, meta.expires_at)
