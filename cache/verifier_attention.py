"""Third family of the verifier's pair model: a small decomposable-attention network.

The other two families compare whole-sentence vectors; this one aligns tokens. Per text, once
(memoised with the cached question): its first ``ATT_TOKENS`` token rows of the static table
projected twice, ``keys = relu(E Wf + bf)`` (attention) and ``values = E Wp + bp``, plus each
token's learned weight. Per pair: every token of one text softly aligned with the other's
tokens (``softmax(keys_a keys_b^T)``), a compare layer on ``[value, aligned, value * aligned,
|value - aligned|]``, a token-weighted mean per text, and a head on ``[va + vb, |va - vb|,
va * vb, pair features]``. Symmetric in the two texts. On its own it ranks worse than the
sentence-vector families, but it errs on different pairs, which the combiner exploits.

Trained by ``cache/verifier_train_attention.py`` (torch); inference here is numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
ATT_TOKENS = 48  # tokens per text the attention family reads (QQP questions: median ~13)


@dataclass(frozen=True, slots=True)
class TokenStates:
    """One text's tokens. The compare layer is linear in each part of its input, so the parts
    that depend on one text only (``values @ G1 + b``, ``values @ G2``) are computed here,
    once per text, instead of per pair."""

    packed: F32  # (tokens, 4d + 1): one array, so a batch pads once per side
    # columns: keys (d) | values (d), values @ G2 (d): what an aligned token carries |
    #          values @ G1 + compare bias (d) | token weight (1)


def _padded(parts: list[F32]) -> F32:
    """(n, longest, width) zero-padded stack of (len_i, width) arrays."""
    longest = max(1, max(len(p) for p in parts))
    out = np.zeros((len(parts), longest, parts[0].shape[1]), dtype=np.float32)
    for i, part in enumerate(parts):
        out[i, : len(part)] = part
    return out


class AttentionFamily:
    def __init__(self, arrays: dict[str, F32], table: F32) -> None:
        self.table = table
        self.dim = int(arrays["att_f_w"].shape[1])
        self.fp_w = np.concatenate([arrays["att_f_w"], arrays["att_p_w"]], axis=1)
        self.fp_b = np.concatenate([arrays["att_f_b"], arrays["att_p_b"]])
        self.token_w: F32 = np.exp(arrays["att_logw"])
        d, g_w = self.dim, arrays["att_g_w"]
        self.g_base = np.concatenate([g_w[:d], g_w[d:2 * d]], axis=1)  # values -> [G1 | G2]
        self.g_b = arrays["att_g_b"]
        self.g_pair = g_w[2 * d:]  # [value * aligned, |value - aligned|] -> d
        self.h1_w, self.h1_b = arrays["att_h1_w"], arrays["att_h1_b"]
        self.h2_w, self.h2_b = arrays["att_h2_w"][:, 0], float(arrays["att_h2_b"][0])

    def states(self, ids: list[npt.NDArray[np.int64]]) -> list[TokenStates]:
        """Per-text token states for a batch of texts: one matmul over all their tokens."""
        cut = [x[:ATT_TOKENS] for x in ids]
        flat = np.concatenate(cut)
        both = self.table[flat] @ self.fp_w + self.fp_b
        d = self.dim
        keys, values = np.maximum(both[:, :d], 0.0), both[:, d:]
        g = values @ self.g_base
        packed = np.concatenate([keys, values, g[:, d:], g[:, :d] + self.g_b, self.token_w[flat][:, None]], axis=1)
        bounds = np.cumsum([len(x) for x in cut])[:-1]
        return [TokenStates(part) for part in np.split(packed, bounds)]

    def _side(self, base_a: F32, mixed_a: F32, mixed_b: F32, att: F32, wa: F32) -> F32:
        """(n, d): a's tokens compared with their soft alignment in b, weighted mean over a."""
        d = self.dim
        att = att - att.max(axis=-1, keepdims=True)
        soft = np.exp(att)
        soft /= soft.sum(axis=-1, keepdims=True)
        aligned = soft @ mixed_b  # (n, la, 2d): [aligned values, aligned values @ G2]
        va, av = mixed_a[..., :d], aligned[..., :d]
        n, la = va.shape[:2]
        both = np.concatenate([va * av, np.abs(va - av)], axis=-1).reshape(n * la, 2 * d)
        pair = (both @ self.g_pair).reshape(n, la, d)  # 2-D: one BLAS call, not a slow stacked loop
        compared = np.maximum(base_a + aligned[..., d:] + pair, 0.0)
        pooled: F32 = (compared * wa[..., None]).sum(axis=1) / (wa.sum(axis=1, keepdims=True) + 1e-6)
        return pooled

    def probs(self, pairs: list[tuple[TokenStates, TokenStates]], fn: F32) -> F32:
        """Probability for each pair of token states; ``fn``: standardised pair features."""
        d = self.dim
        pa, pb = _padded([a.packed for a, _ in pairs]), _padded([b.packed for _, b in pairs])
        ma, mb = pa[..., d:3 * d], pb[..., d:3 * d]
        wa, wb = pa[..., 4 * d], pb[..., 4 * d]  # padding weighs 0
        att = pa[..., :d] @ pb[..., :d].transpose(0, 2, 1)  # (n, la, lb)
        # Padded positions get no attention: -1e4 as in training (exp underflows to 0).
        att_ab = att + np.where(wb > 0, 0.0, -1e4).astype(np.float32)[:, None, :]
        att_ba = att.transpose(0, 2, 1) + np.where(wa > 0, 0.0, -1e4).astype(np.float32)[:, None, :]
        sa = self._side(pa[..., 3 * d:4 * d], ma, mb, att_ab, wa)
        sb = self._side(pb[..., 3 * d:4 * d], mb, ma, att_ba, wb)
        x = np.concatenate([sa + sb, np.abs(sa - sb), sa * sb, fn], axis=1)
        z = np.maximum(x @ self.h1_w + self.h1_b, 0.0) @ self.h2_w + self.h2_b
        out: F32 = (1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))).astype(np.float32)
        return out
