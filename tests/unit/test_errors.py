"""shown() and clipped(): how messages and log lines echo caller input."""

from __future__ import annotations

from banditd.errors import ECHO_CHARS, clipped, shown


def test_shown_is_the_repr_of_a_short_value() -> None:
    """Short values read as they would with !r."""
    assert shown("chat") == "'chat'"
    assert shown(b"\x00a") == "b'\\x00a'"
    assert shown(["x1", "x9"]) == "['x1', 'x9']"


def test_shown_cuts_a_long_string_and_says_how_long_it_was() -> None:
    """A 900 KB name becomes its first ECHO_CHARS characters and its length."""
    text = shown("p" * 900_000)
    assert text == "'" + "p" * ECHO_CHARS + "'... [900,000 characters]"
    assert shown("p" * ECHO_CHARS) == "'" + "p" * ECHO_CHARS + "'"


def test_shown_escapes_non_ascii_and_still_bounds_the_length() -> None:
    """Non-ASCII is escaped (status metadata stays ASCII), so escapes cannot blow the bound."""
    assert shown("café") == "'caf\\xe9'"
    text = shown("\U0001f600" * 100)
    assert text.isascii()
    assert len(text) < ECHO_CHARS + 30
    assert text.endswith("... [100 characters]")


def test_shown_cuts_the_repr_of_other_values() -> None:
    """Containers are cut on their repr, which gives the length."""
    names = [f"feature{i}" for i in range(1000)]
    text = shown(names, limit=50)
    assert text.startswith("['feature0', 'feature1'")
    assert text.endswith(f"... [{len(repr(names)):,} characters]")


def test_clipped_keeps_short_text_and_cuts_long_text() -> None:
    """A whole message or log value: no quotes added, the length marked when cut."""
    assert clipped("unknown policy", 100) == "unknown policy"
    assert clipped("x" * 2000, 100) == "x" * 100 + "... [2,000 characters]"
