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


class _Tag:
    """Adds key=value to every event (the RPC interceptor clears contextvars, so a process-wide
    field cannot live there)."""

    def __init__(self, key: str, value: object) -> None:
        self._key, self._value = key, value

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        event.setdefault(self._key, self._value)
        return event


def configure_logging(
    level: str = "info", fmt: Literal["json", "console"] = "json", worker: int | None = None
) -> None:
    """`worker`: a worker process's index (server.workers > 1), on each of its lines."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    tag: list[structlog.typing.Processor] = [] if worker is None else [_Tag("worker", worker)]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *tag,
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
