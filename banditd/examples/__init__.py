"""The example configs that ship in the wheel: `banditd.examples.path("banditd.toml")`.

    cfg=$(python -c 'import banditd.examples as e; print(e.path("banditd.toml"))')
    banditd serve --config "$cfg"

- banditd.toml: two policies over numeric features on the in-memory store (what `make run`
  serves).
- banditd-text.toml: text, categorical and numeric features; the n-gram text encoder needs no
  model file (its graph ships in the wheel, see banditd/features/ngram.py).

Importing this module imports nothing but the standard library.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SUFFIX = ".toml"


def names() -> list[str]:
    """File names of the shipped example configs, sorted."""
    return sorted(f.name for f in resources.files(__name__).iterdir() if f.name.endswith(_SUFFIX))


def path(name: str) -> Path:
    """The file of one shipped example config, e.g. path("banditd-text.toml")."""
    if name not in names():
        raise ValueError(f"no example config {name!r}; the shipped ones are {names()}")
    # A wheel installs as plain files (banditd is never imported from a zip), so the
    # resource is a real path a daemon or an editor can open.
    return Path(str(resources.files(__name__).joinpath(name)))
