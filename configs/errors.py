"""Configuration errors.

Every error names the file, the dotted key path and what was expected, so an operator can
fix the YAML without reading code: ``configs/prod.yaml: models.llama.balance: expected one
of round_robin, weighted; got 'fastest'``.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.detail = message
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")
