"""banditd.examples: the example configs that ship in the wheel, found by name."""

from __future__ import annotations

import os
import re

import pytest

import banditd.examples
from banditd.config import load_settings


def test_names_lists_the_shipped_configs() -> None:
    """Both example configs are package data, listed sorted by file name."""
    assert banditd.examples.names() == ["banditd-text.toml", "banditd.toml"]


@pytest.mark.parametrize("name", ["banditd.toml", "banditd-text.toml"])
def test_each_example_is_a_valid_config(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """path() gives a readable file that validates as Settings, with its policies declared."""
    for var in [v for v in os.environ if v.startswith("BANDITD_")]:
        monkeypatch.delenv(var)
    settings = load_settings(banditd.examples.path(name))
    assert "chat" in settings.policies


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    """A typo names what exists instead of returning a path that does not."""
    with pytest.raises(ValueError, match=re.escape("'banditd-text.toml'")):
        banditd.examples.path("banditd-txt.toml")
