"""configure_logging(): the only caller of structlog.configure (called once, by cli)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from banditd.errors import LOG_VALUE_CHARS, clipped


def clip_long_strings(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """Clip every string over LOG_VALUE_CHARS, in lists and dicts too (a traceback's exception
    text): a log line never copies a huge input whole, however it got into the line."""
    for key, value in event.items():
        event[key] = _clip(value)
    return event


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return clipped(value, LOG_VALUE_CHARS)
    if isinstance(value, list | tuple):
        return [_clip(v) for v in value]
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    return value


def configure_logging(level: str = "info", fmt: Literal["json", "console"] = "json") -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            clip_long_strings,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
