from __future__ import annotations

import json

import numpy as np
import pytest

from cache.embedders import Embedder
from cache.verifier import FEATURES, WEIGHTS_FILE, Verifier, parse, veto


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load()


def cos(embedder: Embedder, a: str, b: str) -> float:
    v = embedder.encode([a, b])
    return float(np.dot(v[0], v[1]))


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("Turn the alarm on", "Turn the alarm off", "antonym"),
    ("Set a timer for 5 minutes", "Set a timer for 10 minutes", "number"),
    ("What was the GDP of France in 2019?", "What was the GDP of France in 2020?", "number"),
    ("Is coffee good for your health?", "Is coffee not good for your health?", "negation"),
    ("How do I enable dark mode?", "How do I disable dark mode?", "antonym"),
])
def test_meaning_changing_near_misses_are_rejected(verifier: Verifier, embedder: Embedder,
                                                   a: str, b: str, reason: str) -> None:
    similarity = cos(embedder, a, b)
    assert similarity > 0.8  # the first stage alone would serve these
    assert veto(parse(a), parse(b)) == reason
    assert verifier.score(a, b, similarity) == 0.0


def test_paraphrase_scores_above_unrelated(verifier: Verifier, embedder: Embedder) -> None:
    a, b = "How can I learn Python quickly?", "What is the fastest way to learn Python?"
    c = "How can I learn to cook quickly?"
    assert verifier.score(a, b, cos(embedder, a, b)) > verifier.score(a, c, cos(embedder, a, c))
    same = "What is the capital of France?"
    assert verifier.score(same, same, 1.0) > 0.9


def test_weights_file_matches_features() -> None:
    data = json.loads(WEIGHTS_FILE.read_text())
    assert tuple(data["features"]) == FEATURES and len(data["weights"]) == len(FEATURES)
    with pytest.raises(ValueError):
        Verifier([1.0])
