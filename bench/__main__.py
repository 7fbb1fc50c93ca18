"""`python -m bench [--quick] [--only core,grpc] [--store redis --redis-url URL] [--profile]`.

Runs the sections in order, prints each one's tables, and writes every result (plus machine info)
to out/bench.json. A section is a module with `main(quick: bool = False)` that prints its own
tables and returns a JSON-able dict, returns rows (a list of dicts, printed here as a table), or
returns None. Optional sections (bench.extractor, bench.redis) run when they exist. Options such
as `redis_url` are passed to a section's main only if it takes a parameter of that name.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

for _name, _value in (("OPENBLAS_NUM_THREADS", "1"), ("OMP_NUM_THREADS", "1")):
    os.environ.setdefault(_name, _value)  # before numpy loads: single-threaded BLAS, as the daemon

from bench import machine  # noqa: E402
from bench.launcher import ROOT  # noqa: E402
from bench.table import show  # noqa: E402

SECTIONS = ("core", "grpc", "tracing", "extractor", "redis", "workers")
OPTIONAL = frozenset({"extractor", "redis"})


def _load(name: str) -> Any | None:
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if name in OPTIONAL and exc.name == f"bench.{name}":
            return None
        raise


def _call(module: Any, quick: bool, options: dict[str, object]) -> object:
    run = module.main
    accepted = inspect.signature(run).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return run(quick=quick, **kwargs)


def _jsonable(value: object) -> object:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke-test runs")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "bench.json")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--redis-url", default="", help="default with --store redis: start one")
    parser.add_argument("--profile", action="store_true", help="profile the daemon (grpc)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    options: dict[str, object] = {
        "store": args.store, "redis_url": args.redis_url, "profile": args.profile,
    }  # fmt: skip

    started = time.perf_counter()
    info = machine.info()
    machine.show(info)
    report: dict[str, object] = {"machine": info, "quick": args.quick, "sections": {}}
    sections: dict[str, object] = {}
    failed = []
    for name in chosen:
        module = _load(name)
        if module is None:
            print(f"== {name}: not present (bench/{name}.py), skipped ==\n", flush=True)
            sections[name] = {"skipped": f"bench/{name}.py is not present"}
            continue
        t0 = time.perf_counter()
        try:
            result = _call(module, args.quick, options)
        except Exception:  # noqa: BLE001 - report it and go on with the other sections
            failed.append(name)
            text = traceback.format_exc()
            print(f"== {name} FAILED ==\n{text}", flush=True)
            sections[name] = {"error": text}
            continue
        if isinstance(result, list) and result and isinstance(result[0], dict):
            show(result, f"{name}")
        sections[name] = {"result": result, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"   ({name}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    report["sections"] = sections
    report["load_average_at_end"] = machine.load_average()
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
    print(
        f"load average at end: {report['load_average_at_end']}; total {report['seconds']} s;"
        f" results in {args.json}"
    )
    if failed:
        print(f"FAILED sections: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
