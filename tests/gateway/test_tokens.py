"""Token counting: real tiktoken encodings (offline copy), OpenAI's chat accounting, the memo."""

from __future__ import annotations

import tiktoken

from configs.environment import prepare_offline_environment
from gateway.tokens import TokenCounter

prepare_offline_environment()


def test_counts_match_tiktoken_and_openai_chat_accounting() -> None:
    counter = TokenCounter()
    enc = tiktoken.get_encoding("cl100k_base")
    text = "What is the capital of France?"
    assert counter.count_text(text) == len(enc.encode(text))
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}
    expected = 3 + (3 + len(enc.encode("Be brief."))) + (3 + len(enc.encode(text)))
    assert counter.count_prompt(body) == expected
    o200k = tiktoken.get_encoding("o200k_base")
    emoji = "naïve café 🎉 résumé"
    assert counter.count_text(emoji, "gpt-4o") == len(o200k.encode(emoji))


def test_memo_returns_the_same_counts_and_stays_within_its_bound() -> None:
    counter = TokenCounter(memo_chars=100)
    enc = tiktoken.get_encoding("cl100k_base")
    texts = [f"message number {i} about something else entirely" for i in range(20)]
    for _ in range(2):  # the second pass reads whatever the memo kept
        for t in texts:
            assert counter.count_text(t) == len(enc.encode(t))
    memo = counter._memo["cl100k_base"]
    assert sum(map(len, memo)) <= 100 and counter._held["cl100k_base"] == sum(map(len, memo))
    assert texts[-1] in memo and texts[0] not in memo  # oldest evicted first
    huge = "word " * 100
    assert counter.count_text(huge) == len(enc.encode(huge))
    assert huge not in memo  # longer than the whole bound: counted, not kept


def test_a_name_and_tool_calls_count_and_list_content_is_joined() -> None:
    counter = TokenCounter()
    enc = tiktoken.get_encoding("cl100k_base")
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [
        {"role": "user", "name": "ann", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "assistant", "tool_calls": calls},  # content is optional beside tool calls
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    expected = (3 + (3 + len(enc.encode("hi")) + 1) + 2 * (3 + len(enc.encode(str(calls))))
                + (3 + len(enc.encode("a b"))))
    assert counter.count_messages(messages) == expected
