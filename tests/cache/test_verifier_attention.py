"""The optional attention family (off in the shipped model): batched inference equals the
unbatched reference, and the batch path equals the pair-by-pair path with it switched on."""

from __future__ import annotations

import numpy as np
import pytest

from cache.embedders import Embedder, StaticEmbedder
from cache.verifier import MODEL_FILE, Verifier
from cache.verifier_batch import BatchVerifier
from cache.verifier_model import PairModel, TokenSpace
from tests.cache.chat_pairs import HARD_NEGATIVES, PARAPHRASES
from tests.cache.test_verifier import _naive_score


@pytest.fixture(scope="module")
def verifier(embedder: Embedder) -> Verifier:
    """The shipped model plus a random attention family (d=16) and combiner weight for it."""
    assert isinstance(embedder, StaticEmbedder)
    with np.load(MODEL_FILE) as data:
        arrays = {k: data[k].astype(np.float32) for k in data.files if not k.startswith("att_")}
    rng, d, n_feats = np.random.default_rng(0), 16, len(arrays["fmu"])

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    arrays |= {"att_f_w": rand(384, d), "att_f_b": rand(d), "att_p_w": rand(384, d), "att_p_b": rand(d),
               "att_logw": rand(len(arrays["sif"])), "att_g_w": rand(4 * d, d), "att_g_b": rand(d),
               "att_h1_w": rand(3 * d + n_feats, 8), "att_h1_b": rand(8), "att_h2_w": rand(8, 1) * 10,
               "att_h2_b": rand(1)}
    families = len(arrays["combine"]) - n_feats - 1
    assert families == 2
    arrays["combine"] = np.concatenate([arrays["combine"][:2], [0.7], arrays["combine"][2:]]).astype(np.float32)
    return Verifier(PairModel(TokenSpace(embedder, arrays["sif"]), arrays))


def test_attention_family_matches_the_unbatched_reference(verifier: Verifier) -> None:
    model = verifier.model
    assert model.att is not None
    for a, b in [*PARAPHRASES[:6], ("Why is the sky blue during the day but black at night?", "sky?")]:
        pa, pb = verifier.prepare(a), verifier.prepare(b)
        assert model.score(pa, pb) == pytest.approx(_naive_score(model, pa, pb), abs=1e-4)


def test_attention_batch_equals_pair_by_pair(verifier: Verifier, embedder: Embedder) -> None:
    assert isinstance(embedder, StaticEmbedder)
    pairs = [*PARAPHRASES, *HARD_NEGATIVES]
    batch = BatchVerifier(verifier)
    cached = batch.prepare_many([a for a, _ in pairs], remember=True)
    news = [b for _, b in pairs]
    got = batch.score_pairs(list(zip(cached, batch.prepare_many(news, embedder.token_ids(news)), strict=True)))
    want = np.asarray([verifier.score(a, b) for a, b in pairs], dtype=np.float32)
    assert np.allclose(got, want, atol=1e-5)
    assert len(set(np.round(got[got > 0], 4))) > 5  # the scores vary, the family is live
