"""A strict reader over one YAML mapping.

Section parsers pull typed values out of a mapping by key; ``finish()`` then rejects any key
nobody asked for. Every failure becomes a ``ConfigError`` naming the source file, the full
key path and the expected shape. ``${ENV}`` interpolation happens before this (loader.py).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from configs.errors import ConfigError

T = TypeVar("T")

_MISSING: Any = object()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from '250ms', '30s', '5m', '1h', '1d'. A bare number is rejected: units are required."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"expected a duration with a unit like '250ms', '30s', '5m', '1h'; got {value!r}")


def parse_size(value: object) -> int:
    """Bytes from an int or '512kb', '4MiB', '1GB'."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _UNIT_BYTES[(match.group(2) or "b").lower()])
    raise ValueError(f"expected a size like 1048576, '512kb' or '4MiB'; got {value!r}")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Reader:
    """Typed access to one mapping at ``path`` inside ``source``."""

    def __init__(self, data: object, path: builtins.str, source: builtins.str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(source, path, f"expected a mapping; got {_type_name(data)}")
        self._data: Mapping[builtins.str, Any] = data
        self._seen: set[builtins.str] = set()
        self.path = path
        self.source = source

    def sub_path(self, key: builtins.str) -> builtins.str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: builtins.str, message: builtins.str) -> ConfigError:
        return ConfigError(self.source, self.sub_path(key), message)

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self._data

    def keys(self) -> Iterator[builtins.str]:
        return iter(self._data.keys())

    def raw(self, key: builtins.str, default: Any = _MISSING) -> Any:
        self._seen.add(key)
        if key in self._data:
            return self._data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def str(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, builtins.str) or not value:
            raise self.error(key, f"expected a non-empty string; got {_type_name(value)}")
        return value

    def choice(self, key: builtins.str, options: tuple[builtins.str, ...], default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}; got {value!r}")
        return value

    def bool(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, builtins.bool):
            raise self.error(key, f"expected true or false; got {value!r}")
        return value

    def int(self, key: builtins.str, default: Any = _MISSING, *, min_value: builtins.int | None = None) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, builtins.int) or isinstance(value, builtins.bool):
            raise self.error(key, f"expected an integer; got {value!r}")
        if min_value is not None and value < min_value:
            raise self.error(key, f"expected an integer >= {min_value}; got {value}")
        return value

    def float(
        self, key: builtins.str, default: Any = _MISSING, *, min_value: builtins.float | None = None,
        max_value: builtins.float | None = None,
    ) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, (int, builtins.float)) or isinstance(value, builtins.bool):
            raise self.error(key, f"expected a number; got {value!r}")
        if min_value is not None and value < min_value:
            raise self.error(key, f"expected a number >= {min_value}; got {value}")
        if max_value is not None and value > max_value:
            raise self.error(key, f"expected a number <= {max_value}; got {value}")
        return float(value)

    def duration(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def size(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def str_list(self, key: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, builtins.str) and v for v in value):
            raise self.error(key, f"expected a list of strings; got {value!r}")
        return tuple(value)

    def section(self, key: builtins.str, *, required: builtins.bool = False) -> Reader | None:
        """A nested Reader, or None when the key is absent (or null) and not required."""
        value = self.raw(key, _MISSING if required else None)
        if value is None:
            return None
        return Reader(value, self.sub_path(key), self.source)

    def items(self, key: builtins.str) -> list[tuple[builtins.str, object]]:
        """(name, value) pairs of a nested mapping keyed by names; absent means empty."""
        value = self.raw(key, None)
        if value is None:
            return []
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping of names; got {_type_name(value)}")
        return [(str(k), v) for k, v in value.items()]

    def finish(self) -> None:
        """Reject keys that no parser consumed: a typo must never be silently ignored."""
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            known = ", ".join(sorted(self._seen)) or "none"
            raise ConfigError(
                self.source, self.sub_path(str(unknown[0])),
                f"unknown key (allowed here: {known})",
            )
