"""Vector index of cached questions: one faiss inner-product index per scope, bounded in
total entries with LRU eviction (a hit refreshes an entry). Vectors are unit length, so the
inner product is the cosine. Thread-safe: the cache's worker thread searches while the event
loop adds and removes; every operation holds one lock for microseconds (a search of a scope
of a few thousand vectors), never across a batch."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from cache.embedders import Vectors


@dataclass(slots=True)
class Entry:
    key: str  # store key of the answer: "{scope}|s|{uid}"
    scope: str
    text: str
    vector: Vectors
    expires_at: float  # wall clock (shared between replicas)
    fid: int = -1


class SemanticIndex:
    def __init__(self, dim: int, max_entries: int, on_evict: Callable[[Entry, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.dim = dim
        self.max_entries = max_entries
        self._by_key: OrderedDict[str, Entry] = OrderedDict()  # LRU order
        self._by_fid: dict[int, Entry] = {}
        self._scopes: dict[str, Any] = {}  # scope -> faiss.IndexIDMap2
        self._next_fid = 0
        self._on_evict = on_evict
        self._clock = clock
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._by_key)

    def scopes(self) -> int:
        return len(self._scopes)

    def get(self, key: str) -> Entry | None:
        return self._by_key.get(key)

    def add(self, key: str, scope: str, text: str, vector: Vectors, expires_at: float) -> Entry:
        with self._lock:
            return self._add(key, scope, text, vector, expires_at)

    def _add(self, key: str, scope: str, text: str, vector: Vectors, expires_at: float) -> Entry:
        self._remove(key)
        entry = Entry(key, scope, text, vector, expires_at, self._next_fid)
        self._next_fid += 1
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        index.add_with_ids(vector.reshape(1, -1), np.array([entry.fid], dtype=np.int64))
        self._by_key[key] = entry
        self._by_fid[entry.fid] = entry
        while len(self._by_key) > self.max_entries:
            oldest = next(iter(self._by_key.values()))
            self._remove(oldest.key)
            if self._on_evict is not None:
                self._on_evict(oldest, "index_bound")
        return entry

    def search(self, scope: str, vector: Vectors, k: int = 4) -> list[tuple[Entry, float]]:
        """Nearest live entries of ``scope``, best first; expired ones are dropped on the way."""
        with self._lock:
            return self._search(scope, vector, k)

    def search_many(self, scopes: list[str], vectors: Vectors, k: int = 4) -> list[list[tuple[Entry, float]]]:
        """``search`` for each (scope, vector row): one faiss call per distinct scope for all
        its rows (a batch of lookups in one scope is one matrix product, not one per row)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows: dict[str, list[int]] = {}
        for i, scope in enumerate(scopes):
            rows.setdefault(scope, []).append(i)
        out: list[list[tuple[Entry, float]]] = [[] for _ in scopes]
        for scope, idx in rows.items():
            # One row (the usual step: one lookup per scope) is a contiguous view; several
            # are gathered into a copy.
            block = vectors[idx[0]:idx[0] + 1] if len(idx) == 1 else vectors[idx]
            with self._lock:  # per scope, as every operation: never held across the batch
                found = self._search_rows(scope, block, k)
            for i, hits in zip(idx, found, strict=True):
                out[i] = hits
        return out

    def _search(self, scope: str, vector: Vectors, k: int) -> list[tuple[Entry, float]]:
        return self._search_rows(scope, np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), k)[0]

    def _search_rows(self, scope: str, vectors: Vectors, k: int) -> list[list[tuple[Entry, float]]]:
        """``vectors``: C-contiguous float32 rows. The index's ``search_c`` is called with
        preallocated outputs: faiss's Python wrapper (checks, conversions) cost about as much
        as the search of a small scope; the C++ search, hence the result, is the same."""
        index = self._scopes.get(scope)
        if index is None:
            return [[] for _ in range(len(vectors))]
        n, kk = len(vectors), min(k, index.ntotal)
        sims = np.empty((n, kk), dtype=np.float32)
        fids = np.empty((n, kk), dtype=np.int64)
        index.search_c(n, faiss.swig_ptr(vectors), kk, faiss.swig_ptr(sims), faiss.swig_ptr(fids))
        now = self._clock()
        by_fid = self._by_fid
        out = []
        for row_sims, row_fids in zip(sims.tolist(), fids.tolist(), strict=True):
            found = []
            for sim, fid in zip(row_sims, row_fids, strict=True):
                entry = by_fid.get(fid)
                if entry is None:
                    continue
                if entry.expires_at <= now:
                    self._remove(entry.key)
                    continue
                found.append((entry, sim))
            out.append(found)
        return out

    def touch(self, key: str) -> None:
        with self._lock:
            if key in self._by_key:
                self._by_key.move_to_end(key)

    def remove(self, key: str) -> bool:
        with self._lock:
            return self._remove(key)

    def _remove(self, key: str) -> bool:
        entry = self._by_key.pop(key, None)
        if entry is None:
            return False
        del self._by_fid[entry.fid]
        index = self._scopes[entry.scope]
        index.remove_ids(np.array([entry.fid], dtype=np.int64))
        if index.ntotal == 0:
            del self._scopes[entry.scope]
        return True

    def remove_prefix(self, prefix: str) -> int:
        with self._lock:
            keys = [k for k in self._by_key if k.startswith(prefix)]
            for key in keys:
                self._remove(key)
            return len(keys)
