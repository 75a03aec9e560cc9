"""Tool-call planning for the mock backend.

Contract (``plan_tool_call``):
- no ``tools`` or ``tool_choice: "none"`` → no call;
- ``tool_choice: {"type": "function", "function": {"name": X}}`` → a call to X (400 if unknown);
- ``"required"`` → a call to the first tool;
- ``"auto"`` or absent → a call to the first tool, unless the last message is a ``tool`` result
  (then the model answers in text, so agent loops terminate).
Arguments are a JSON object with one value per *required* parameter, chosen from its schema:
the first ``enum`` value, else a fixed value per JSON type. The call id is derived from the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

_ARG_PIECE = 8  # characters of argument text per streamed delta (one "token" each)
_TYPE_VALUES: dict[str, Any] = {
    "string": "mock", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {},
    "null": None,
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    pieces: tuple[str, ...]

    def message_entry(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


class ToolChoiceError(ValueError):
    """The request names a tool it did not define (the caller answers 400)."""


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function")
    return fn if isinstance(fn, dict) else {}


def _chosen(tools: list[dict[str, Any]], choice: object) -> dict[str, Any]:
    if not isinstance(choice, dict):
        return _function(tools[0])
    name = _function(choice).get("name")
    for tool in tools:
        if _function(tool).get("name") == name:
            return _function(tool)
    raise ToolChoiceError(f"tool_choice names an undefined function: {name!r}")


def _value(schema: object) -> Any:
    if not isinstance(schema, dict):
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _TYPE_VALUES.get(str(kind), "mock")


def arguments_for(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters")
    if not isinstance(params, dict):
        return {}
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = params.get("required")
    names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    return {name: _value(props.get(name)) for name in names}


def plan_tool_call(
    tools: list[dict[str, Any]], choice: object, messages: list[dict[str, Any]], seed: str,
) -> ToolCall | None:
    if not tools or choice == "none":
        return None
    forced = choice == "required" or isinstance(choice, dict)
    if not forced and messages and messages[-1].get("role") == "tool":
        return None
    fn = _chosen(tools, choice)
    name = str(fn.get("name", "tool"))
    arguments = orjson.dumps(arguments_for(fn)).decode()
    pieces = tuple(arguments[i:i + _ARG_PIECE] for i in range(0, len(arguments), _ARG_PIECE))
    call_id = f"call_{zlib.crc32(f'{seed}/{name}'.encode()):08x}"
    return ToolCall(call_id, name, arguments, pieces)
