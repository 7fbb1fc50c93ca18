"""Static checks of the image definition (no Docker engine here): hadolint and invariants."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from banditd.server.health_status import LIVENESS
from tests.deploy.conftest import ROOT, Instruction, find, parse_dockerfile, render, sidecar, tool

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE)


def _final_stage() -> list[Instruction]:
    ins = _instructions()
    last_from = max(i for i, x in enumerate(ins) if x.keyword == "FROM")
    return ins[last_from:]


def _build_args() -> dict[str, str]:
    args = {}
    for x in _instructions():
        if x.keyword == "ARG" and "=" in x.value:
            name, _, default = x.value.partition("=")
            args[name] = default.strip('"')
    return args


def _env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for x in stage:
        if x.keyword == "ENV":
            for pair in x.exec_form():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_hadolint_finds_nothing() -> None:
    """hadolint (the dev extra's binary) passes at its strictest threshold."""
    out = subprocess.run(
        [tool("hadolint"), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_is_multi_stage_on_slim_python_311() -> None:
    """Two stages from a pinned slim Python 3.11 base; never `latest`."""
    froms = [x.exec_form() for x in _instructions() if x.keyword == "FROM"]
    assert len(froms) >= 2
    base = _build_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[.\d]*-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    for f in froms:
        assert f[0] == "${PYTHON_IMAGE}", f
    assert ":latest" not in DOCKERFILE.read_text(encoding="utf-8")
    copies = [x.value for x in _final_stage() if x.keyword == "COPY"]
    assert any(c.startswith("--from=build") for c in copies), "runtime copies the built venv"


def test_runtime_user_is_not_root_and_matches_the_pod() -> None:
    """The final USER is a numeric non-root uid, the same the pod's securityContext runs."""
    (user,) = [x.value for x in _final_stage() if x.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert int(uid) > 0, user
    context = sidecar(render("prod"))["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid or uid))


def test_entrypoint_is_banditd_serve_with_the_mounted_config() -> None:
    """ENTRYPOINT `banditd serve` (console script banditd.cli:main) reading BANDITD_CONFIG."""
    (entrypoint,) = [x.exec_form() for x in _final_stage() if x.keyword == "ENTRYPOINT"]
    assert entrypoint == ["banditd", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["banditd"] == "banditd.cli:main"
    config = _env(_final_stage())["BANDITD_CONFIG"]
    assert config == "/etc/banditd/banditd.toml"
    mounts = {m["name"]: m["mountPath"] for m in sidecar(render("prod"))["volumeMounts"]}
    assert Path(config).parent == Path(mounts["banditd-config"])
    assert not [x for x in _final_stage() if x.keyword == "CMD"], "args come from the pod spec"


def test_healthcheck_asks_the_grpc_health_service_for_liveness() -> None:
    """HEALTHCHECK runs banditd.server.probe (grpc.health.v1 Check) against liveness (""), which
    a Redis outage never fails: an orchestrator replacing unhealthy containers leaves them be."""
    (check,) = [x.value for x in _final_stage() if x.keyword == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert "--start-period" in options
    argv = Instruction("CMD", command).exec_form()
    assert argv[:3] == ["python", "-m", "banditd.server.probe"]
    service = argv[argv.index("--service") + 1] if "--service" in argv else LIVENESS
    assert service == LIVENESS


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over a relative path."""
    out = ""
    for part in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if part.startswith("**"):
            out += "(?:.*/)?" if part.endswith("/") else ".*"
        elif part == "*":
            out += "[^/]*"
        elif part == "?":
            out += "[^/]"
        else:
            out += re.escape(part)
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _glob(raw.removeprefix("!"))
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher used below: later patterns win, `!` re-includes, `**` spans directories."""
    patterns = ["*", "!banditd/", "**/__pycache__"]
    assert _ignored("tests/conftest.py", patterns)
    assert not _ignored("banditd/cli.py", patterns)
    assert _ignored("banditd/server/__pycache__/app.cpython-311.pyc", patterns)


def test_every_copy_source_is_in_the_build_context() -> None:
    """Each COPY source exists and .dockerignore sends it; tests and venvs stay out."""
    patterns = _dockerignore()
    for x in _instructions():
        if x.keyword != "COPY" or x.value.startswith("--from"):
            continue
        *sources, _dest = x.exec_form()
        for source in sources:
            path = ROOT / source
            assert path.exists(), source
            files = [path] if path.is_file() else list(path.rglob("*.py"))
            assert files, source
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel:
                    assert not _ignored(rel, patterns), f"{rel} is excluded by .dockerignore"
    for kept_out in ("tests/conftest.py", ".venv/bin/python", ".git/HEAD", "Makefile"):
        assert _ignored(kept_out, patterns), kept_out


def test_image_default_config_is_the_configmap_file() -> None:
    """The image bakes deploy/base/banditd.toml, the file the ConfigMap is generated from."""
    copies = [x.exec_form() for x in _final_stage() if x.keyword == "COPY"]
    assert ["deploy/base/banditd.toml", "/etc/banditd/banditd.toml"] in copies
    data = find(render("dev"), "ConfigMap")["data"]["banditd.toml"]
    assert data == (ROOT / "deploy/base/banditd.toml").read_text(encoding="utf-8")


def test_image_installs_the_server_extra_plus_the_build_arg_extras() -> None:
    """`pip install banditd` is the client alone, so the image installs `.[server]`, and
    `--build-arg EXTRAS=text` gives `.[server,text]` (the RUN line's shell expansion, run here)."""
    (install,) = [
        x.value for x in _instructions() if x.keyword == "RUN" and "pip install" in x.value
    ]
    spec = re.search(r'pip install [^"]*("[^"]+")', install)
    assert spec, install
    expanded = {
        extras: subprocess.run(
            ["bash", "-c", f"EXTRAS={extras}; echo {spec.group(1)}"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        for extras in ("", "text")
    }  # fmt: skip
    assert expanded == {"": ".[server]", "text": ".[server,text]"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = project["optional-dependencies"]["server"]
    assert any(r.startswith("onnxruntime") for r in server), server  # the daemon's stack
