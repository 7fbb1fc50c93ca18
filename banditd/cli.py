"""`banditd serve | check-config | simulate | tune` (and `python -m banditd ...`).

Settings flags follow the subcommand in pydantic-settings form, e.g.
`banditd serve --config banditd.toml --server.listen 0.0.0.0:50051 --log_format console`.
A user error (bad config, flag or file, an address in use) is a message on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from banditd import __version__
from banditd.errors import ConfigError, shown

try:
    from pydantic import BaseModel, ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_settings import SettingsError

    from banditd.config import Settings, load_settings

    SERVER_INSTALLED = True
except ImportError:  # `pip install banditd` is the client alone; main() says what to install
    SERVER_INSTALLED = False

SECRET_KEYS = ("password", "url", "token", "secret", "headers")
# What the server extra adds to the client-only install (pyproject.toml), as import names.
SERVER_MODULES = ("numpy", "scipy", "grpc_health", "grpc_reflection", "redis", "onnxruntime",
                  "structlog", "pydantic_settings", "prometheus_client")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banditd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"banditd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the gRPC daemon until SIGTERM"),
        ("check-config", "print the merged settings (secrets masked); exit 2 if invalid"),
    ):
        p = sub.add_parser(
            name, help=text, description=text, epilog=flags_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        p.add_argument(
            "--config", type=Path, default=None,
            help="TOML config file (default: $BANDITD_CONFIG; none: defaults, env and flags)",
        )  # fmt: skip
    _sim_parsers(sub)
    return parser


# -- the --section.key flags, listed by --help --------------------------------------------------
def flags_help() -> str:
    """Every settings flag from the Settings model: dotted name, type, default, description,
    by section. Per-policy keys (policies.<name>.*) are policy_template's, described once."""
    if not SERVER_INSTALLED:
        return "settings flags: listed once the server extra is installed (banditd[server])"
    head = (
        "settings flags (precedence: flags > env BANDITD_<SECTION>__<KEY> > TOML file >"
        " defaults). Each --key takes one value; a section also takes JSON, e.g."
        """ --server '{"grace_s": 5}'; lists take a,b or JSON or the flag repeated."""
    )
    lines = textwrap.wrap(head, 96)
    for section, fields in _sections(Settings):
        lines += ["", *textwrap.wrap(section + ("" if ":" in section else ":"), 96,
                                     subsequent_indent="    ")]  # fmt: skip
        for name, info in fields:
            lines.append(f"  --{name} {_type_name(info.annotation)} = {_default(info)}")
            if info.description:
                lines += textwrap.wrap(info.description, 96, initial_indent=" " * 6,
                                       subsequent_indent=" " * 6)  # fmt: skip
    lines.append(
        "\npolicies.<name>: a policy, with the keys of policy_template above, e.g."
        """\n  --policies '{"chat": {"alpha": 0.5, "arms": ["a", "b"]}}'"""
        "  or  BANDITD_POLICIES__CHAT__ALPHA=0.5"
    )
    return "\n".join(lines)


def _sections(
    model: type[BaseModel], prefix: str = "", title: str = "general"
) -> list[tuple[str, list[tuple[str, FieldInfo]]]]:
    """[(section title, [(dotted name, field)])], a section per nested model, depth first."""
    own: list[tuple[str, FieldInfo]] = []
    nested: list[tuple[str, list[tuple[str, FieldInfo]]]] = []
    for name, info in model.model_fields.items():
        if name == "policies":
            continue  # described once, after policy_template
        sub = _model_in(info.annotation)
        if sub is None:
            own.append((prefix + name, info))
            continue
        doc = " ".join((sub.__doc__ or "").strip().split("\n\n")[0].split())
        nested += _sections(sub, f"{prefix}{name}.", f"{prefix}{name}: {doc}".strip(": "))
    return ([(title, own)] if own else []) + nested


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (also `Model | None`); None for scalars, lists and dicts."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    for candidate in (annotation, *args):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: object) -> str:
    """int, {a,b} (choices), float|null, list[str], dict[str,float], JSON (a model)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if isinstance(annotation, types.UnionType):
        return "|".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if annotation is bool:
        return "{true,false}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "JSON"
    origin = typing.get_origin(annotation)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{','.join(map(_type_name, args))}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value == "":
        return "''"
    if isinstance(value, BaseModel):
        return "{}"
    return json.dumps(value) if not isinstance(value, str) else value


# -- simulator (banditd/sim) ---------------------------------------------------------------------
def _sim_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (
        ("simulate", "run a scenario file: regret/reward curves (PNG) + JSON/CSV summaries"),
        ("tune", "search a policy's exploration parameters; print/write the best as a config"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("scenario", type=Path, help="scenario TOML (see simulations/)")
        p.add_argument("--out", type=Path, default=Path("simulations/out"), help="output dir")
        p.add_argument("--seeds", type=int, default=None, help="override the scenario's seeds")
        p.add_argument("--horizon", type=int, default=None, help="override its horizon")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "tune":
            p.add_argument("--policy", default=None, help="policy to tune ([tune] policy)")
            p.add_argument(
                "--grid", action="append", default=[], metavar="KEY=V1,V2",
                help="values to try, e.g. alpha=0.1,0.5,1 (repeatable; default: [tune] grid)",
            )  # fmt: skip
            p.add_argument(
                "--write-config",
                type=Path,
                default=None,
                help="write the best setting as a [policies.<name>] TOML file",
            )


def _simulate(args: argparse.Namespace) -> int:
    from banditd.sim.report import run_scenario, write_json
    from banditd.sim.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario, args.seeds, args.horizon)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"banditd: bad scenario {args.scenario}:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "simulate":
        summary = run_scenario(scenario, args.out, progress=not args.no_progress)
        if summary["method"] == "simulation":
            for agent in summary["ranking_by_regret"]:
                r = summary["agents"][agent]["regret"]
                print(f"{agent:>18}  regret {r['mean']:10.2f}  [{r['lo']:.2f}, {r['hi']:.2f}]")
        else:
            if "replay" in summary:
                r = summary["replay"]
                if "error" in r:
                    print(f"replay of the trace: not possible: {r['error']}")
                else:
                    done = f"{r['same_arm']}/{r['decisions']}"
                    print(f"replay of the trace: {done} decisions reproduced")
            for name, est in summary["estimates"].items():
                line = "  ".join(
                    f"{k} {e.value:.5f} [{e.lo:.5f}, {e.hi:.5f}]" for k, e in est.items()
                )
                print(f"{name:>18}  {line}")
        print(f"wrote {args.out / scenario.name}.{{png,json}}")
        return 0
    from banditd.sim.tune import config_snippet, tune

    policy = args.policy or scenario.tune.get("policy") or next(iter(scenario.policies), None)
    grid: dict[str, list[object]] = dict(scenario.tune.get("grid", {}))
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key.strip()] = [float(v) for v in values.split(",") if v.strip()]
    if policy is None or not grid:
        print("banditd: tune needs a policy and a grid ([tune] in the scenario or --grid)",
              file=sys.stderr)  # fmt: skip
        return 2
    tuning = tune(scenario, policy, grid, progress=not args.no_progress)
    snippet = config_snippet(scenario, tuning)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json({"policy": policy, "method": tuning.method, "paired": tuning.paired,
                "trials": [vars(t) for t in tuning.trials]},
               args.out / f"{scenario.name}.tune.json")  # fmt: skip
    if args.write_config:
        args.write_config.write_text(snippet)
    print(snippet, end="")
    return 0


def _settings(args: argparse.Namespace, flags: Sequence[str]) -> Settings | None:
    """The merged settings, or None after saying on stderr what is wrong."""
    prog = f"banditd {args.command}"
    config, source = args.config, f"--config {args.config}"
    if config is None and os.environ.get("BANDITD_CONFIG"):
        config = Path(os.environ["BANDITD_CONFIG"])
        source = f"BANDITD_CONFIG={config}"
    try:
        return load_settings(config, flags, prog=prog, source=source)
    except ValidationError as exc:
        print(f"banditd: invalid configuration:\n{validation_errors(exc)}", file=sys.stderr)
    except SettingsError as exc:  # a flag argparse refused, or env JSON that does not parse
        text = str(exc)
        if text.startswith("error parsing CLI: "):
            text = text.removeprefix("error parsing CLI: ")
            print(f"{prog}: {text} (`{prog} --help` lists the flags)", file=sys.stderr)
        else:
            print(f"banditd: invalid configuration: {text}", file=sys.stderr)
    except ConfigError as exc:
        print(f"banditd: {exc}", file=sys.stderr)
    return None


def validation_errors(exc: ValidationError) -> str:
    """One line per error: where, what, and the value given if it is a scalar."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        what = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            what = "unknown setting (a typo, or a key in the wrong section?)"
        value = error.get("input")
        got = ""
        if isinstance(value, str | int | float) and error["type"] != "extra_forbidden":
            got = f" (got {shown(value, 80)})"
        lines.append(f"  {where}: {what}{got}" if where else f"  {what}{got}")
    return "\n".join(lines)


def _masked(value: object, key: str = "") -> object:
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if value and isinstance(value, str) and any(s in key.lower() for s in SECRET_KEYS):
        return "***"
    return value


def memory_report(parts: dict[str, int | None], workers: int = 1) -> str:
    """One line: the worst-case memory the bounds allow, by part (banditd/sizing.py); with
    worker processes, per worker (the supervisor adds its own: workers.SUPERVISOR_BYTES)."""

    def mib(v: int | None) -> str:
        return "unbounded" if v is None else f"{v / (1 << 20):.0f} MiB"

    detail = ", ".join(f"{k} {mib(v)}" for k, v in parts.items() if k != "total")
    each = f" per worker x {workers} workers" if workers > 1 else ""
    return f"# worst-case memory: {mib(parts['total'])}{each} ({detail})"


def main(argv: Sequence[str] | None = None) -> int:
    args, flags = _parser().parse_known_args(argv)
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        print(f"banditd: {args.command} needs the server extra (missing {', '.join(missing)}):"
              " pip install 'banditd[server]'", file=sys.stderr)  # fmt: skip
        return 2
    if args.command in ("simulate", "tune"):
        if flags:
            print(f"banditd: unknown arguments {flags}", file=sys.stderr)
            return 2
        return _simulate(args)
    settings = _settings(args, flags)
    if settings is None:
        return 2
    from banditd.server.workers import worker_count

    try:
        workers = worker_count(settings)
        if args.command == "check-config":
            return _check_config(settings, workers)
        return _serve(settings, workers)
    except ConfigError as exc:  # what serve refuses at start: files, models, a busy address
        print(f"banditd: {exc}", file=sys.stderr)
        return 2


def _check_config(settings: Settings, workers: int) -> int:
    from banditd.server.app import check_startup

    with contextlib.redirect_stdout(sys.stderr):  # its log lines (encoder.loaded): stdout is
        check_startup(settings)  # the JSON, and logging stays unconfigured (structlog's default)
    print(json.dumps(_masked(settings.model_dump(mode="json")), indent=2, sort_keys=True))
    print(memory_report(settings.memory_estimate(), workers), file=sys.stderr)
    return 0


def _serve(settings: Settings, workers: int) -> int:
    from banditd.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if workers > 1:  # docs/deploy.md, "Worker processes"
        from banditd.server.supervisor import Supervisor

        return Supervisor(settings, workers).run()
    from banditd.server.app import serve

    asyncio.run(serve(settings))
    return 0
