from __future__ import annotations

import numpy as np
import pytest

from cache.embedders import Embedder, StaticEmbedder
from cache.verifier import MODEL_FILE, Verifier, parse, veto
from cache.verifier_model import PairModel, Prepared, pair_features
from cache.verifier_text import trigram_sets
from configs.cache import SemanticConfig
from tests.cache.chat_pairs import HARD_NEGATIVES, PARAPHRASES


@pytest.fixture(scope="module")
def verifier(embedder: Embedder) -> Verifier:
    assert isinstance(embedder, StaticEmbedder)
    return Verifier.load(embedder)


def cos(embedder: Embedder, a: str, b: str) -> float:
    v = embedder.encode([a, b])
    return float(np.dot(v[0], v[1]))


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("Turn the alarm on", "Turn the alarm off", "antonym"),
    ("Set a timer for 5 minutes", "Set a timer for 10 minutes", "number"),
    ("What was the GDP of France in 2019?", "What was the GDP of France in 2020?", "number"),
    ("Is coffee good for your health?", "Is coffee not good for your health?", "negation"),
    ("How do I enable dark mode?", "How do I disable dark mode?", "antonym"),
    ("How do I reset my password?", "Why do I need to reset my password?", "question"),
])
def test_meaning_changing_near_misses_are_vetoed(verifier: Verifier, embedder: Embedder,
                                                 a: str, b: str, reason: str) -> None:
    assert cos(embedder, a, b) > 0.8  # the first stage alone would serve these
    assert veto(parse(a), parse(b)) == reason
    assert verifier.score(a, b) == 0.0


def test_no_chat_hard_negative_is_served(verifier: Verifier) -> None:
    threshold = SemanticConfig().threshold
    served = [(a, b, round(s, 3)) for a, b in HARD_NEGATIVES
              if (s := max(verifier.score(a, b), verifier.score(b, a))) >= threshold]
    assert served == []


def test_chat_paraphrases_are_served(verifier: Verifier) -> None:
    """At the QQP-calibrated default (precision first) 8 of these 18 are served today: the bar
    guards against regressions; the medians must sit on either side of 0.5."""
    threshold = SemanticConfig().threshold
    scores = [verifier.score(a, b) for a, b in PARAPHRASES]
    served = sum(s >= threshold for s in scores)
    assert served >= 0.4 * len(PARAPHRASES), list(zip(PARAPHRASES, np.round(scores, 3), strict=True))
    negatives = sorted(verifier.score(a, b) for a, b in HARD_NEGATIVES)
    assert np.median(scores) > 0.5 > negatives[len(negatives) // 2]


def test_score_properties(verifier: Verifier) -> None:
    same = "What is the capital of France?"
    assert verifier.score(same, "what is the capital of france") == 1.0
    a, b = "How can I learn Python quickly?", "What is the fastest way to learn Python?"
    assert verifier.score(a, b) > verifier.score(a, "How can I learn to cook quickly?")
    assert 0.0 <= verifier.score(a, "Best pizza in Naples") < 0.5


def test_default_threshold_matches_the_model_file(verifier: Verifier) -> None:
    assert MODEL_FILE.stat().st_size < 4 * 1024 * 1024
    assert SemanticConfig().threshold == pytest.approx(verifier.default_threshold, abs=0.005)


def _naive_score(model: PairModel, a: Prepared, b: Prepared) -> float:
    """Reference: each ensemble member evaluated on its own, straight from the shipped arrays."""
    arr = model._a

    def member(prefix: str, x: np.ndarray) -> float:
        hidden = np.maximum(x @ arr[f"{prefix}_w1"] + arr[f"{prefix}_b1"], 0.0)
        return float(1.0 / (1.0 + np.exp(-(hidden @ arr[f"{prefix}_w2"] + arr[f"{prefix}_b2"])[0])))

    feats = (pair_features(a, b) - arr["fmu"]) / arr["fsd"]
    x = (np.concatenate([feats, np.abs(a.sif_vec - b.sif_vec), a.sif_vec * b.sif_vec]) - arr["xmu"]) / arr["xsd"]
    mlp = [member(k[:-3], x) for k in arr if k.startswith("mlp_") and k.endswith("_w1")]
    proj = []
    for key in (k[:-5] for k in arr if k.startswith("proj_") and k.endswith("_logw")):
        vecs = []
        for p in (a, b):
            pooled = (model.space.table[p.ids] * np.exp(arr[f"{key}_logw"][p.ids])[:, None]).sum(0)
            vec = pooled @ arr[f"{key}_pw"] + arr[f"{key}_pb"]
            vecs.append(vec / np.linalg.norm(vec))
        proj.append(member(key, np.concatenate([np.abs(vecs[0] - vecs[1]) * 8, vecs[0] * vecs[1] * 8, feats])))
    probs = [float(np.mean(mlp)), float(np.mean(proj))]
    if "att_f_w" in arr:  # the optional attention family
        probs.append(_naive_attention(arr, model.space.table, a.ids, b.ids, feats))
    logits = [np.log(p / (1.0 - p)) for p in probs]
    w, k = arr["combine"], len(probs)
    return float(1.0 / (1.0 + np.exp(-(np.dot(w[:k], logits) + np.dot(w[k:-1], feats) + w[-1]))))


def _naive_attention(arr: dict[str, np.ndarray], table: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                     feats: np.ndarray) -> float:
    """The attention family for one pair, unbatched and unpadded."""
    ea, eb = table[ia[:48]], table[ib[:48]]
    fa, fb = (np.maximum(e @ arr["att_f_w"] + arr["att_f_b"], 0.0) for e in (ea, eb))
    pa, pb = (e @ arr["att_p_w"] + arr["att_p_b"] for e in (ea, eb))

    def side(p: np.ndarray, other: np.ndarray, att: np.ndarray, ids: np.ndarray) -> np.ndarray:
        soft = np.exp(att - att.max(axis=1, keepdims=True))
        aligned = (soft / soft.sum(axis=1, keepdims=True)) @ other
        both = np.concatenate([p, aligned, p * aligned, np.abs(p - aligned)], axis=1)
        compared = np.maximum(both @ arr["att_g_w"] + arr["att_g_b"], 0.0)
        w = np.exp(arr["att_logw"][ids[:48]])
        pooled: np.ndarray = (compared * w[:, None]).sum(0) / (w.sum() + 1e-6)
        return pooled

    va, vb = side(pa, pb, fa @ fb.T, ia), side(pb, pa, fb @ fa.T, ib)
    x = np.concatenate([va + vb, np.abs(va - vb), va * vb, feats])
    z = np.maximum(x @ arr["att_h1_w"] + arr["att_h1_b"], 0.0) @ arr["att_h2_w"][:, 0] + arr["att_h2_b"][0]
    return float(1.0 / (1.0 + np.exp(-z)))


def test_stacked_inference_matches_members(verifier: Verifier) -> None:
    for a, b in PARAPHRASES[:6]:
        pa, pb = verifier.prepare(a), verifier.prepare(b)
        assert verifier.model.score(pa, pb) == pytest.approx(_naive_score(verifier.model, pa, pb), abs=1e-4)


def test_trigram_sets_are_the_character_trigrams_one_to_one() -> None:
    """Int-coded trigrams (3 code points of 21 bits) decode to exactly the 3-character
    windows of each text, batched or alone, ASCII or not, short texts included."""
    texts = ["how do i cook rice", "", "a", "ab", "abc", "\u0661\u0662\u0663 12,5 x", "caf\u00e9 r\u00e9sum\u00e9 2"]
    squashed = [parse(t).squashed for t in texts]
    batched = trigram_sets(squashed)
    for text, got in zip(squashed, batched, strict=True):
        want = {text[i:i + 3] for i in range(len(text) - 2)}
        decoded = {"".join(chr((code >> shift) & 0x1FFFFF) for shift in (42, 21, 0)) for code in got}
        assert decoded == want and len(got) == len(want)
        assert trigram_sets([text])[0] == got
