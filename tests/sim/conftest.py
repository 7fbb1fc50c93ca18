"""Simulator fixtures: obp's own estimators, loaded without torch."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def obp_estimators() -> Iterator[Any]:
    """obp 0.4.1's `obp.ope.estimators` module, imported without torch.

    obp imports torch at module level (it is never installed here), but its estimators only
    use it in `isinstance(x, torch.Tensor)` checks on the numpy path. We load obp/utils.py and
    obp/ope/estimators.py straight from the wheel with a stand-in `torch` that has only a
    `Tensor` class, bypassing obp/ope/__init__.py (which pulls torch.nn), and remove every
    stand-in from sys.modules afterwards so nothing else sees it.
    """
    spec = importlib.util.find_spec("obp")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "obp is not installed (make test installs it: pip install --no-deps obp==0.4.1)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    stand_ins = ("torch", "obp.utils", "obp.ope", "obp.ope.estimators")
    saved = {name: sys.modules.get(name) for name in stand_ins}
    torch = types.ModuleType("torch")
    torch.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
    ope = types.ModuleType("obp.ope")
    ope.__path__ = [str(root / "ope")]
    sys.modules["torch"] = torch
    sys.modules["obp.ope"] = ope
    try:
        import obp  # noqa: F401  (the package itself: only its version)

        _load("obp.utils", root / "utils.py")
        yield _load("obp.ope.estimators", root / "ope" / "estimators.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
