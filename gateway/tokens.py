"""Token counting with tiktoken, for admission estimates and for streams whose upstream gave no
usage. Upstream usage always wins when present.

Counts follow OpenAI's published chat accounting (3 tokens per message plus the role/name, 3
for the reply primer) with cl100k_base, or o200k_base for model names that use it. For
non-OpenAI models this is an estimate, documented as such. Encodings load lazily, once per
process, from the offline copy (configs.environment).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import tiktoken

_O200K_PREFIXES = ("gpt-4o", "o1", "o3", "o4", "gpt-4.1", "gpt-5")


MEMO_CHARS = 4_000_000  # text held by the memo, per encoding (~4-16 MB)


class TokenCounter:
    """Counts are memoised per text (bounded by total characters, oldest evicted first): chat
    traffic resends the same system prompts and conversation history on every turn, and an
    exact count costs 3-15 µs per message on the request path."""

    def __init__(self, memo_chars: int = MEMO_CHARS) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._memo: dict[str, dict[str, int]] = {}
        self._memo_chars = memo_chars
        self._held: dict[str, int] = {}

    def _encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            enc = self._encodings[name] = tiktoken.get_encoding(name)
        return enc

    def count_text(self, text: str, model: str = "") -> int:
        if not text:
            return 0
        name = _encoding_name(model)
        memo = self._memo.get(name)
        if memo is None:
            memo = self._memo[name] = {}
            self._held[name] = 0
        count = memo.get(text)
        if count is None:
            count = memo[text] = len(self._encoding(name).encode(text, disallowed_special=()))
            self._hold(name, memo, len(text))
        return count

    def _hold(self, name: str, memo: dict[str, int], chars: int) -> None:
        held = self._held[name] + chars
        while held > self._memo_chars and memo:
            oldest = next(iter(memo))
            del memo[oldest]
            held -= len(oldest)
        self._held[name] = held

    def count_messages(self, messages: Iterable[Any], model: str = "") -> int:
        total = 3
        memo = self._memo.get(_encoding_name(model)) or {}
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            text = content if isinstance(content, str) else _content_text(content)
            count = memo.get(text)  # the usual case: a text seen before, no call
            total += 3 + (count if count is not None else self.count_text(text, model))
            if message.get("name"):
                total += 1
            if message.get("tool_calls"):
                total += self.count_text(str(message["tool_calls"]), model)
        return total

    def count_prompt(self, body: dict[str, Any], model: str = "") -> int:
        if "messages" in body:
            return self.count_messages(body["messages"], model)
        prompt = body.get("prompt", body.get("input", ""))
        if isinstance(prompt, str):
            return self.count_text(prompt, model)
        if isinstance(prompt, list):
            return sum(self.count_text(p, model) if isinstance(p, str) else
                       (len(p) if isinstance(p, list) else 1) for p in prompt)
        return 0


@functools.lru_cache(maxsize=1024)
def _encoding_name(model: str) -> str:
    return "o200k_base" if model.startswith(_O200K_PREFIXES) else "cl100k_base"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
