"""OpenAI request validation.

Validation is strict about what would make an upstream misbehave (types, ranges, required
fields) and lenient about unknown top-level fields, which pass through (vLLM's extra sampling
parameters arrive that way through the SDK's ``extra_body``). Every failure names its field in
``param``, as OpenAI does.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest, MalformedJSON

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_POSITIVE_INTS = ("max_tokens", "max_completion_tokens", "n")


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise MalformedJSON("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedJSON("request body must be a JSON object")
    return body


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model",
                             code="missing_required_parameter" if model is None else "invalid_type")
    return model


def _check_common(body: dict[str, Any]) -> None:
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not low <= value <= high):
            raise _fail(name, f"'{name}' must be a number between {low:g} and {high:g}; got {value!r}")
    for name in _POSITIVE_INTS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _fail(name, f"'{name}' must be an integer >= 1; got {value!r}")
    if isinstance(body.get("n"), int) and body["n"] > 128:
        raise _fail("n", "'n' must be at most 128")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "'stream' must be a boolean")
    _check_stream_options(body)
    _check_stop(body.get("stop"))
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _fail("seed", "'seed' must be an integer")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail("user", "'user' must be a string")


def _check_stream_options(body: dict[str, Any]) -> None:
    options = body.get("stream_options")
    if options is None:
        return
    if not body.get("stream"):
        raise _fail("stream_options", "'stream_options' is only allowed when 'stream' is true")
    if not isinstance(options, dict):
        raise _fail("stream_options", "'stream_options' must be an object")
    include = options.get("include_usage")
    if include is not None and not isinstance(include, bool):
        raise _fail("stream_options.include_usage", "'include_usage' must be a boolean")


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise _fail("stop", "'stop' must be a string or a list of at most 4 strings")


def validate_chat(body: dict[str, Any]) -> str:
    """Validate a chat completion request; returns the model alias."""
    model = require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages",
                             code="missing_required_parameter" if messages is None else "invalid_value")
    for i, message in enumerate(messages):
        _check_message(i, message)
    _check_common(body)
    _check_tools(body)
    _check_response_format(body.get("response_format"))
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _fail("logprobs", "'logprobs' must be a boolean")
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20):
        raise _fail("top_logprobs", "'top_logprobs' must be an integer between 0 and 20")
    return model


def _check_message(i: int, message: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _fail(where, f"'{where}' must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise _fail(f"{where}.role", f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {role!r}")
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise _fail(f"{where}.content", f"'{where}.content' is required for role {role}")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _fail(f"{where}.content[{j}]", f"'{where}.content[{j}]' must be an object with a 'type'")
    elif not isinstance(content, str):
        raise _fail(f"{where}.content", f"'{where}.content' must be a string or an array of parts")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise _fail(f"{where}.tool_call_id", f"'{where}.tool_call_id' is required for role tool")


def _check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("tools", "'tools' must be an array")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                    or not isinstance(fn.get("name"), str):
                raise _fail(f"tools[{i}]", f"'tools[{i}]' must be {{type: function, function: {{name, ...}}}}")
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("function"), dict):
        raise _fail("tool_choice", "'tool_choice' must be none, auto, required or {type: function, function: {name}}")
    if not tools:
        raise _fail("tool_choice", "'tool_choice' names a function but 'tools' is empty")


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise _fail("response_format", "'response_format.type' must be text, json_object or json_schema")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
        raise _fail("response_format.json_schema", "'json_schema' is required for type json_schema")


def validate_completion(body: dict[str, Any]) -> str:
    model = require_model(body)
    prompt = body.get("prompt")
    if not _is_text_or_tokens(prompt):
        raise InvalidRequest("'prompt' must be a string, an array of strings or of token arrays",
                             param="prompt", code="invalid_value")
    _check_common(body)
    return model


def validate_embedding(body: dict[str, Any]) -> str:
    model = require_model(body)
    if not _is_text_or_tokens(body.get("input")):
        raise InvalidRequest("'input' must be a non-empty string, an array of strings or of token arrays",
                             param="input", code="invalid_value")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _fail("encoding_format", "'encoding_format' must be float or base64")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise _fail("dimensions", "'dimensions' must be an integer >= 1")
    return model


def _is_text_or_tokens(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return True
    return all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value)
