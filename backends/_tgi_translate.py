"""OpenAI request bodies → TGI native ``/generate`` requests, and TGI results → OpenAI values.

Chat template (native API only, ``tgi_messages_api: false``): ChatML, the format most
instruction-tuned open models on TGI understand::

    <|im_start|>system
    You are terse.<|im_end|>
    <|im_start|>user
    Hi<|im_end|>
    <|im_start|>assistant

``<|im_end|>`` is added to the stop sequences (when the request leaves room under TGI's default
``max_stop_sequences`` of 4) and stripped from the output. Models with another template should
use the Messages API (``tgi_messages_api: true``), where TGI applies the model's own template.

Parameter mapping: ``max_tokens``/``max_completion_tokens`` → ``max_new_tokens``;
``temperature`` 0 → greedy (``do_sample: false``), > 0 → ``temperature`` + sampling;
``top_p`` in (0, 1) → ``top_p``; ``stop``, ``seed``, ``frequency_penalty`` as is;
``response_format`` json_object/json_schema → ``grammar: {"type": "json", ...}`` (TGI >= 1.4.3).
``n``/``best_of`` > 1 and ``tools`` are rejected with a 400.
"""

from __future__ import annotations

from typing import Any

from backends._shapes import check_single_choice, reject, text_of
from backends.base import Endpoint, Usage
from backends.errors import BackendHTTPError

CHATML_END = "<|im_end|>"
TGI_MAX_STOP_SEQUENCES = 4
FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
# TGI error_type → HTTP status, as TGI's router assigns them.
ERROR_STATUS = {"validation": 422, "overloaded": 429, "generation": 424,
                "incomplete_generation": 500, "tokenizer": 422}


def chatml(backend: str, messages: object) -> str:
    if not isinstance(messages, list) or not messages:
        raise reject(backend, "messages must be a non-empty list", "messages")
    parts = []
    for msg in messages:
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise reject(backend, "each message needs a role", "messages")
        role = "system" if msg["role"] == "developer" else msg["role"]
        parts.append(f"<|im_start|>{role}\n{text_of(backend, msg.get('content'))}{CHATML_END}\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def prompt_of(backend: str, endpoint: Endpoint, body: dict[str, Any]) -> str:
    if endpoint == "chat":
        if body.get("tools"):
            raise reject(backend, "tools need the TGI Messages API (set tgi_messages_api: true)", "tools")
        return chatml(backend, body.get("messages"))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise reject(backend, "prompt must be a single string for TGI", "prompt")
    return prompt


def stops_of(body: dict[str, Any], endpoint: Endpoint) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    if endpoint == "chat" and len(stops) < TGI_MAX_STOP_SEQUENCES and CHATML_END not in stops:
        stops.append(CHATML_END)
    return stops


def parameters(backend: str, endpoint: Endpoint, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    check_single_choice(backend, body)
    params: dict[str, Any] = {"details": True}
    if not stream:
        params["decoder_input_details"] = True  # prefill tokens → prompt token count
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        if temperature > 0:
            params.update(temperature=temperature, do_sample=True)
        else:
            params["do_sample"] = False
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and 0 < top_p < 1:
        params.update(top_p=top_p, do_sample=True)
    stops = stops_of(body, endpoint)
    if stops:
        params["stop"] = stops
    for key in ("seed", "frequency_penalty"):
        if body.get(key) is not None:
            params[key] = body[key]
    grammar = _grammar(body.get("response_format"))
    if grammar is not None:
        params["grammar"] = grammar
    return params


def _grammar(fmt: object) -> dict[str, Any] | None:
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json", "value": {"type": "object"}}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"type": "json", "value": schema}
    return None


def generate_request(backend: str, endpoint: Endpoint, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    return {"inputs": prompt_of(backend, endpoint, body),
            "parameters": parameters(backend, endpoint, body, stream)}


def finish_reason(details: object) -> str:
    raw = details.get("finish_reason") if isinstance(details, dict) else None
    return FINISH_REASONS.get(str(raw), "stop")


def usage_of(details: object, prompt_tokens: int | None) -> Usage | None:
    if not isinstance(details, dict):
        return None
    generated = details.get("generated_tokens")
    prefill = details.get("prefill")
    if prompt_tokens is None and isinstance(prefill, list) and prefill:
        prompt_tokens = len(prefill)
    if not isinstance(generated, int) or prompt_tokens is None:
        return None
    return Usage(prompt_tokens, generated)


def stream_error(backend: str, event: dict[str, Any]) -> BackendHTTPError:
    """An ``{"error", "error_type"}`` event inside a 200 stream."""
    error_type = str(event.get("error_type") or "generation")
    return BackendHTTPError(backend, ERROR_STATUS.get(error_type, 500), str(event.get("error")),
                            error_type=error_type)
