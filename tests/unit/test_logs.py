"""The log processor chain configure_logging installs."""

from __future__ import annotations

from banditd.errors import LOG_VALUE_CHARS
from banditd.logs import clip_long_strings


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
