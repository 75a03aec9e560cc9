"""Pure generation logic of the mock backend, shared by the in-process backend (mock.py) and the
standalone HTTP server (mock_server.py). No I/O and no clocks here: callers do the pacing.

Contracts:
- Output is deterministic: the same request body gives the same text, tool call and usage.
  Text is ``output_tokens`` words of a fixed lorem text, starting at an offset derived from a
  hash of the last user message (of the prompt, for completions); choice ``i`` of ``n`` starts
  ``7 * i`` words further on, so choices differ.
- One word is one token. ``max_tokens`` / ``max_completion_tokens`` cap the count
  (finish_reason ``length``); a ``stop`` sequence cuts the text before it (``stop``).
- Prompt tokens are ``round(1.3 * whitespace-separated words)`` over every message's text (and
  tool definitions' names/descriptions), at least 1. Cheap and stable, not a real tokenizer.
- A prompt over ``context_window`` tokens, like an invalid request, raises ``MockError`` (the
  OpenAI error the upstream would answer with); both transports turn it into their own errors.
- ``fail_mode`` fires per request with probability ``fail_rate``; a ``fail_rate`` of 0 with a
  ``fail_mode`` set means "always" (so ``{fail_mode: http_500}`` alone does what it says).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from random import Random
from typing import Any, Literal

from backends.mock_tools import ToolCall, ToolChoiceError, plan_tool_call
from configs.schema import MockSpec

LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur excepteur sint occaecat cupidatat "
    "non proident sunt in culpa qui officia deserunt mollit anim id est laborum"
).split()
MAX_N = 128
# Failure modes that the HTTP layer turns into an error status (the others act on the transport).
HTTP_FAIL_MODES = frozenset({"http_500", "http_429", "context_length"})
Kind = Literal["chat", "completion"]


class MockError(Exception):
    """An OpenAI-style error answer: ``status`` plus the ``error`` object of the body."""

    def __init__(
        self, status: int, message: str, *, error_type: str = "invalid_request_error",
        code: str | None = None, param: str | None = None, retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {
            "message": self.message, "type": self.error_type, "param": self.param, "code": self.code,
        }}


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    """What one choice produces: text ``pieces`` (one token each) or a tool call whose argument
    text is streamed in ``pieces``."""

    pieces: tuple[str, ...]
    finish_reason: str
    tool_call: ToolCall | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    kind: Kind
    model: str
    prompt_tokens: int
    choices: tuple[ChoicePlan, ...]
    include_usage: bool = False

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.pieces) for c in self.choices)

    @property
    def max_pieces(self) -> int:
        return max((len(c.pieces) for c in self.choices), default=0)

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


def count_tokens(text: str) -> int:
    """The mock's token count for ``text``: round(1.3 * words)."""
    return round(len(text.split()) * 1.3)


def invalid(message: str, param: str | None = None) -> MockError:
    return MockError(400, message, param=param)


def effective_fail_rate(spec: MockSpec) -> float:
    if spec.fail_mode is None:
        return 0.0
    return spec.fail_rate if spec.fail_rate > 0 else 1.0


def draw_failure(spec: MockSpec, rng: Random) -> str | None:
    """The failure mode to act out for one request, or None."""
    rate = effective_fail_rate(spec)
    if rate <= 0.0 or (rate < 1.0 and rng.random() >= rate):
        return None
    return spec.fail_mode


def http_failure(mode: str, prompt_tokens: int = 0, window: int = 0) -> MockError:
    """The error answer for a failure mode in ``HTTP_FAIL_MODES``."""
    if mode == "http_429":
        return MockError(429, "Rate limit reached (mock)", error_type="rate_limit_error",
                         code="rate_limit_exceeded", retry_after=1.0)
    if mode == "context_length":
        return context_length_error(prompt_tokens, window)
    return MockError(500, "The server had an error while processing your request (mock)",
                     error_type="server_error", code="internal_error")


def context_length_error(prompt_tokens: int, window: int) -> MockError:
    return MockError(
        400,
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded", param="messages",
    )


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise invalid("each message must be an object", "messages")
    return messages


def _chat_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[int, str]:
    """(prompt tokens, seed text: the last user message)."""
    texts = [_content_text(m.get("content")) for m in messages]
    for tool in tools:
        fn = tool.get("function") or {}
        texts.append(f"{fn.get('name', '')} {fn.get('description', '')}")
    last_user = next(
        (_content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "",
    )
    return max(1, count_tokens(" ".join(texts))), last_user


def _int_param(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"'{name}' must be an integer between {low} and {high}", name)
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return tuple(s for s in stop if s)
    raise invalid("'stop' must be a string or an array of up to 4 strings", "stop")


def _cap(body: dict[str, Any], spec: MockSpec) -> tuple[int, bool]:
    """(tokens to generate, whether the request's limit cut them)."""
    limit = _int_param(body, "max_completion_tokens", 1, 1 << 30)
    if limit is None:
        limit = _int_param(body, "max_tokens", 1, 1 << 30)
    if limit is not None and limit < spec.output_tokens:
        return limit, True
    return spec.output_tokens, False


def text_choice(seed_text: str, index: int, count: int, limited: bool, stops: Sequence[str]) -> ChoicePlan:
    start = zlib.crc32(seed_text.encode()) + 7 * index
    words = [LOREM[(start + i) % len(LOREM)] for i in range(count)]
    pieces = [words[0], *(" " + w for w in words[1:])] if words else []
    text = "".join(pieces)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut < 0:
        return ChoicePlan(tuple(pieces), "length" if limited else "stop")
    return ChoicePlan(_cut_pieces(pieces, cut), "stop")


def _cut_pieces(pieces: list[str], cut: int) -> tuple[str, ...]:
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > cut:
            if cut > used:
                kept.append(piece[: cut - used])
            break
        kept.append(piece)
        used += len(piece)
    return tuple(kept)


def _model(body: dict[str, Any], default: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _check_window(prompt_tokens: int, spec: MockSpec) -> None:
    if prompt_tokens > spec.context_window:
        raise context_length_error(prompt_tokens, spec.context_window)


def plan_chat(body: dict[str, Any], spec: MockSpec, default_model: str = "mock") -> Plan:
    """Plan a chat completion; raises ``MockError`` for requests a real server would reject."""
    messages = _messages(body)
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise invalid("'tools' must be an array of tool objects", "tools")
    prompt_tokens, seed = _chat_prompt(messages, tools)
    _check_window(prompt_tokens, spec)
    n = _int_param(body, "n", 1, MAX_N) or 1
    count, limited = _cap(body, spec)
    stops = _stops(body)
    try:
        call = plan_tool_call(tools, body.get("tool_choice"), messages, seed)
    except ToolChoiceError as exc:
        raise invalid(str(exc), "tool_choice") from None
    choices = tuple(
        ChoicePlan(call.pieces, "tool_calls", call) if call is not None
        else text_choice(seed, i, count, limited, stops)
        for i in range(n)
    )
    return Plan("chat", _model(body, default_model), prompt_tokens, choices, _include_usage(body))


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return [" ".join(map(str, prompt))]
    raise invalid("'prompt' must be a string or an array of strings", "prompt")


def plan_completion(body: dict[str, Any], spec: MockSpec, default_model: str = "mock") -> Plan:
    """Plan a legacy text completion; choice ``p * n + i`` answers prompt ``p``."""
    prompts = _prompts(body)
    prompt_tokens = max(1, sum(count_tokens(p) for p in prompts))
    _check_window(prompt_tokens, spec)
    n = _int_param(body, "n", 1, MAX_N) or 1
    count, limited = _cap(body, spec)
    stops = _stops(body)
    choices = tuple(
        text_choice(p, i, count, limited, stops) for p in prompts for i in range(n)
    )
    return Plan("completion", _model(body, default_model), prompt_tokens, choices, _include_usage(body))


def plan(kind: Kind, body: dict[str, Any], spec: MockSpec, default_model: str = "mock") -> Plan:
    if kind == "chat":
        return plan_chat(body, spec, default_model)
    return plan_completion(body, spec, default_model)
