"""The log processor chain configure_logging installs."""

from __future__ import annotations

import datetime
import re

import structlog

from banditd.errors import LOG_VALUE_CHARS
from banditd.logs import clip_long_strings, render_json, stamp_utc


def test_long_strings_are_clipped_anywhere_in_the_event() -> None:
    """A huge value is clipped at top level and inside a traceback's dicts and lists."""
    huge = "p" * 900_000
    event = {
        "event": "rpc.completed",
        "policy": huge,
        "k": 3,
        "exception": [{"exc_type": "ValueError", "exc_value": huge, "frames": []}],
    }
    out = clip_long_strings(None, "warning", event)
    assert out["policy"] == "p" * LOG_VALUE_CHARS + "... [900,000 characters]"
    assert out["exception"][0]["exc_value"] == out["policy"]
    assert (out["event"], out["k"], out["exception"][0]["exc_type"]) == (
        "rpc.completed",
        3,
        "ValueError",
    )


def test_render_json_writes_what_structlogs_json_renderer_writes() -> None:
    """Same bytes as JSONRenderer: key order, escapes, floats, non-JSON values via repr."""
    event = {
        "event": "rpc.completed",
        "policy": 'caf\u00e9 "q" \\ \n',
        "latency_ms": 0.123,
        "big": 1e300,
        "nan": float("nan"),
        "k": 16,
        "ok": True,
        "none": None,
        "nested": {"a": [1, 2.5, "x"], 3: "int key"},
        "exc_info": ValueError("boom"),
        "arms": ("a", "b"),
    }
    expected = structlog.processors.JSONRenderer()(None, "info", dict(event))
    assert render_json(None, "info", dict(event)) == expected


def test_stamp_utc_is_iso_8601_utc_with_microseconds() -> None:
    """The timestamp TimeStamper(fmt="iso", utc=True) writes, to the microsecond, ending in Z."""
    before = datetime.datetime.now(datetime.UTC)
    stamped = stamp_utc(None, "info", {})["timestamp"]
    after = datetime.datetime.now(datetime.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamped)
    parsed = datetime.datetime.fromisoformat(stamped.replace("Z", "+00:00"))
    assert before - datetime.timedelta(microseconds=2) <= parsed <= after
