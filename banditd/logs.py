"""configure_logging(): the only caller of structlog.configure (called once, by cli)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

import structlog

from banditd.errors import LOG_VALUE_CHARS, clipped


def clip_long_strings(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """Clip every string over LOG_VALUE_CHARS, in lists and dicts too (a traceback's exception
    text): a log line never copies a huge input whole, however it got into the line.

    Per line this visits every field, so the common ones (short strings, numbers) cost one
    check each and are left in place."""
    for key, value in event.items():
        if isinstance(value, str):
            if len(value) > LOG_VALUE_CHARS:
                event[key] = clipped(value, LOG_VALUE_CHARS)
        elif isinstance(value, _CONTAINERS):
            event[key] = _clip(value)
    return event


_CONTAINERS = (list, tuple, dict)  # (a tuple: `list | tuple | dict` builds a union per call)


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return clipped(value, LOG_VALUE_CHARS)
    if isinstance(value, list | tuple):
        return [_clip(v) for v in value]
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    return value


# At the default level every RPC writes one line. structlog's TimeStamper builds a datetime per
# line and JSONRenderer a json encoder per line; the two below write the same line for less
# (docs/bench.md, "The canonical log line").
_second: tuple[int, str] = (-1, "")


def stamp_utc(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """`timestamp`: ISO 8601 UTC with microseconds, e.g. 2026-12-02T01:50:47.783710Z (as
    TimeStamper(fmt="iso", utc=True), but always with six digits); the date and time of day
    are formatted once per second."""
    global _second  # one tuple, replaced whole: safe across threads
    now = time.time()
    second = int(now)
    cached, prefix = _second
    if second != cached:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, prefix)
    event["timestamp"] = f"{prefix}.{int((now - second) * 1e6):06d}Z"
    return event


def _json_encoder() -> Callable[[Any, int], Any] | None:
    """json.dumps' own C encoder, built once (json.dumps builds one per call), with its
    defaults and structlog's fallback for other types; None without the C accelerator."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    fallback = getattr(structlog.processors, "_json_fallback_handler", repr)
    # markers=None: no circular-reference check (log fields are flat; a cycle would end in
    # RecursionError rather than ValueError).
    encode: Callable[[Any, int], Any] = make(
        None, fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return encode


_ENCODE = _json_encoder()
_RENDER = structlog.processors.JSONRenderer()


def render_json(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """The event as one JSON object, exactly as structlog's JSONRenderer writes it."""
    if _ENCODE is None:
        return _RENDER(logger, method, event)
    return "".join(_ENCODE(event, 0))


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
        render_json if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    tag: list[structlog.typing.Processor] = [] if worker is None else [_Tag("worker", worker)]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *tag,
            structlog.processors.add_log_level,
            stamp_utc,
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
