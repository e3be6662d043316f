"""Log formatting: MCPGATE_LOG_FORMAT=json writes one JSON object per line."""

from __future__ import annotations

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter with mcpgate's fields."""
