"""`banditd serve | check-config` (and `python -m banditd ...`).

Settings flags follow the subcommand in pydantic-settings form, e.g.
`banditd serve --config banditd.toml --server.listen 0.0.0.0:50051 --log_format console`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from banditd import __version__
from banditd.config import Settings, load_settings

SECRET_KEYS = ("password", "url", "token", "secret")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="banditd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"banditd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the gRPC daemon until SIGTERM"),
        ("check-config", "print the merged settings (secrets masked); exit 2 if invalid"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config",
            type=Path,
            default=os.environ.get("BANDITD_CONFIG") or None,
            help="TOML config file (default: $BANDITD_CONFIG)",
        )
    return parser


def _settings(config: Path | None, flags: Sequence[str]) -> Settings | None:
    try:
        return load_settings(config, flags)
    except (ValidationError, FileNotFoundError) as exc:
        print(f"banditd: invalid configuration:\n{exc}", file=sys.stderr)
        return None


def _masked(value: object, key: str = "") -> object:
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if value and isinstance(value, str) and any(s in key.lower() for s in SECRET_KEYS):
        return "***"
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args, flags = _parser().parse_known_args(argv)
    settings = _settings(args.config, flags)
    if settings is None:
        return 2
    if args.command == "check-config":
        print(json.dumps(_masked(settings.model_dump(mode="json")), indent=2, sort_keys=True))
        return 0
    from banditd.logs import configure_logging
    from banditd.server.app import serve

    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
    return 0
