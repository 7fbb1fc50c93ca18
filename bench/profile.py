"""Sampling profile of a running server with py-spy (attach by pid; the `bench` extra has it).

py-spy sees Python frames only: time in grpc's Cython core and the asyncio loop shows up as
self time of `Handle._run`, and its completion-queue poller thread as `Thread.run`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def available() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` into a collapsed-stack file; wait() on the result."""
    exe = available()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy; it is in the bench extra)")
    argv = [
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _label(frame: str) -> str:
    m = _FRAME.match(frame)
    return f"{m['name']} ({Path(m['file']).name})" if m else frame


def summarise(path: Path, top: int = 25) -> dict[str, object]:
    """Share of samples per function: inclusive (on the stack) and self (on top)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_label(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    if total == 0:
        return {"samples": 0, "inclusive": [], "self": []}
    return {
        "samples": total,
        "inclusive": [(name, n / total) for name, n in inclusive.most_common(top)],
        "self": [(name, n / total) for name, n in own.most_common(top)],
    }


def show(summary: dict[str, object], skip: tuple[str, ...] = ()) -> None:
    print(f"daemon profile (py-spy, {summary['samples']} samples; share of samples):")
    inclusive = summary["inclusive"]
    own = summary["self"]
    assert isinstance(inclusive, list)
    assert isinstance(own, list)
    print("  inclusive:")
    for name, share in inclusive:
        if not any(s in name for s in skip):
            print(f"    {100 * share:5.1f}%  {name}")
    print("  self:")
    for name, share in own:
        print(f"    {100 * share:5.1f}%  {name}")
    print(flush=True)
