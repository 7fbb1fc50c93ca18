"""`python -m tests.chaos --decisions N`: run the chaos scenario, print its table; exit 1 if a
check failed (the same checks as test_chaos.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.chaos.scenario import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--decisions", type=int, default=10_000, help="Routes to answer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="configs and replica logs (default: temp)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="banditd-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args.decisions, workdir, args.seed))
    print(report.table())
    failures = report.failures()
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"replica logs and configs: {workdir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
