"""Semantic cache: embedding search (first stage) + the verifier (second stage).

Answers live in the ``Store`` under ``{scope}|s|{uid}``; the index only holds questions.
A candidate is served when its cosine is at least ``min_similarity`` and the verifier's
probability that the cached answer fits the new question is at least the route's threshold.
With a ``sync`` (Redis), every add/remove is published so all replicas keep the same index,
and a starting replica loads the entries persisted in Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cache.batcher import BatchingEmbedder
from cache.embedders import Vectors
from cache.index import Entry, SemanticIndex
from cache.stores import Store
from cache.sync import EntryMeta, IndexSync
from cache.verifier import Verifier


@dataclass(frozen=True, slots=True)
class Candidate:
    entry: Entry
    similarity: float
    score: float  # verifier probability; 0.0 when a veto fired


class SemanticCache:
    def __init__(self, store: Store, embedder: BatchingEmbedder, index: SemanticIndex,
                 verifier: Verifier | None, min_similarity: float, top_k: int = 4, verify_k: int = 2,
                 sync: IndexSync | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.embedder = embedder
        self.index = index
        self.verifier = verifier
        self.min_similarity = min_similarity
        self.top_k = top_k
        self.verify_k = verify_k  # candidates the verifier scores (~0.2 ms each, on the loop)
        self.sync = sync
        self._clock = clock

    async def probe(self, scope: str, text: str, vector: Vectors | None = None) -> Candidate | None:
        """Best-scoring candidate in ``scope`` (no threshold applied beyond min_similarity)."""
        vec = vector if vector is not None else await self.embedder.embed(text)
        found = self.index.search(scope, vec, self.top_k)
        best: Candidate | None = None
        verifier = self.verifier
        query = verifier.prepare(text) if verifier is not None and found else None
        for rank, (entry, sim) in enumerate(found):
            if sim < self.min_similarity or (verifier is not None and rank >= self.verify_k):
                break
            score = sim if verifier is None or query is None else (
                verifier.score_prepared(verifier.remember(entry.text), query))
            if best is None or score > best.score:
                best = Candidate(entry, sim, score)
        return best

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
        vec = await self.embedder.embed(text)
        if self.verifier is not None:
            self.verifier.remember(text)  # prepared once, off the lookup path
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
