from __future__ import annotations

import numpy as np

from cache.embedders import Embedder
from cache.index import Entry, SemanticIndex


def test_index_is_bounded_and_evicts_least_recently_used(embedder: Embedder) -> None:
    evicted: list[tuple[str, str]] = []
    index = SemanticIndex(embedder.dim, max_entries=5, on_evict=lambda e, why: evicted.append((e.key, why)))
    texts = [f"question number {w}" for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")]
    vectors = embedder.encode(texts)
    for i, (text, vec) in enumerate(zip(texts, vectors, strict=True)):
        index.add(f"s{i % 2}|s|{i}", f"s{i % 2}", text, vec, expires_at=1e12)
        if i == 2:
            index.touch("s0|s|0")  # keep the first one hot
        assert len(index) <= 5
    assert len(index) == 5
    assert ("s1|s|1", "index_bound") in evicted and index.get("s0|s|0") is not None
    hits = index.search("s0", vectors[0], k=3)
    assert hits[0][0].key == "s0|s|0" and abs(hits[0][1] - 1.0) < 1e-4
    assert all(e.scope == "s0" for e, _ in hits)  # never another scope


def test_expired_entries_are_dropped_and_prefix_removal(embedder: Embedder) -> None:
    now = [100.0]
    index = SemanticIndex(embedder.dim, max_entries=10, clock=lambda: now[0])
    vec = embedder.encode(["hello world"])[0]
    index.add("t|m|x|s|1", "t|m|x", "hello world", vec, expires_at=150.0)
    index.add("u|m|x|s|1", "u|m|x", "hello world", vec, expires_at=1e12)
    assert index.search("t|m|x", vec)
    now[0] = 200.0
    assert index.search("t|m|x", vec) == [] and len(index) == 1 and index.scopes() == 1
    assert index.remove_prefix("u|") == 1 and len(index) == 0


def test_entry_keeps_vector(embedder: Embedder) -> None:
    index = SemanticIndex(embedder.dim, max_entries=2)
    vec = embedder.encode(["abc"])[0]
    entry: Entry = index.add("k", "s", "abc", vec, 1e12)
    assert np.allclose(entry.vector, vec)


def test_search_many_groups_rows_by_scope_and_equals_one_by_one(embedder: Embedder) -> None:
    now = [100.0]
    index = SemanticIndex(embedder.dim, max_entries=20, clock=lambda: now[0])
    texts = ["how to cook rice", "how to boil eggs", "learn python fast", "learn java fast", "old entry"]
    vectors = embedder.encode(texts)
    for i, (text, vec) in enumerate(zip(texts, vectors, strict=True)):
        index.add(f"k{i}", "a" if i % 2 == 0 else "b", text, vec, expires_at=150.0 if i == 4 else 1e12)
    queries = embedder.encode(["cooking rice", "python quickly", "boiled eggs", "old entry", "nothing"])
    scopes = ["a", "b", "a", "a", "missing"]
    now[0] = 200.0  # "old entry" expired: dropped on the way, in every row of its scope
    together = index.search_many(scopes, queries, k=3)
    alone = [index.search(s, q, k=3) for s, q in zip(scopes, queries, strict=True)]
    assert [[(e.key, round(s, 5)) for e, s in row] for row in together] == \
        [[(e.key, round(s, 5)) for e, s in row] for row in alone]
    assert together[4] == [] and all(e.key != "k4" for row in together for e, _ in row)
    assert together[0][0][0].key == "k0" and {e.scope for e, _ in together[1]} == {"b"}


def test_search_many_with_one_row_per_scope_equals_the_faiss_wrapper(embedder: Embedder) -> None:
    """One row per scope (a contiguous view passed to ``search_c`` directly): same results,
    bit for bit, as faiss's own Python ``search`` on each scope."""
    index = SemanticIndex(embedder.dim, max_entries=20)
    texts = ["how to cook rice", "how to boil eggs", "learn python fast", "learn java fast", "fix a bike"]
    for i, vec in enumerate(embedder.encode(texts)):
        index.add(f"k{i}", f"s{i % 3}", texts[i], vec, expires_at=1e12)
    queries = embedder.encode(["cooking rice", "python quickly", "repair my bike", "nothing"])
    scopes = ["s0", "s1", "s2", "missing"]
    got = index.search_many(scopes, queries, k=4)
    for row, scope, query in zip(got, scopes, queries, strict=True):
        faiss_index = index._scopes.get(scope)
        if faiss_index is None:
            assert row == []
            continue
        sims, fids = faiss_index.search(query[None, :], faiss_index.ntotal)
        assert [(e.fid, s) for e, s in row] == list(zip(fids[0].tolist(), sims[0].tolist(), strict=True))
