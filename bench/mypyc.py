"""The mypyc trial: the hot-path modules compiled from the same source, side by side with pure
Python in one run (docs/bench.md, "What was tried").

    python -m bench.mypyc [--quick] [--shape DxK ...] [--repeats N] [--no-tests] [--keep DIR]

Not a section of `python -m bench`: it needs a C compiler and about a minute to build. It

1. copies the tracked tree (`git ls-files`) to a temp dir and compiles MODULES there in place
   with mypyc (`mypyc.build.mypycify`, opt level 3; mypy ships mypyc). Extension modules win
   over .py files on import, so a process started in the copy runs the compiled modules and
   the rest of the package (grpc, protobuf, numpy, structlog, redis, ...) as it is;
2. checks that the copy imports the compiled modules and this tree the pure ones;
3. counts the instructions of a handler round trip under valgrind's callgrind (deterministic:
   the one figure here this VM's noise cannot move), then measures both, interleaved per
   repeat (order rotated): the in-process handler
   (`loadgen handler`: RouterService.Route + Feedback, no gRPC; hot loop and cold caches), and
   one `banditd serve` each under load (`loadgen conc`, 64 in flight) and sequentially, with
   the server's CPU per round trip; in-memory store, LinUCB;
4. runs TESTS against the compiled copy and against this tree, and prints pass/fail counts.

Speed is printed, never asserted. Servers and handlers run on CPU0, clients on CPU1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.grpc import FULL, QUICK, Plan, _shape, daemon_config, measure, start_daemon
from bench.launcher import ROOT, SERVER_CPU, Process, child_env, run_client
from bench.table import show

# The hot path of a Route+Feedback on the in-memory store, and the modules it calls per request.
MODULES = (
    "banditd/router.py",
    "banditd/policies/linear.py",
    "banditd/policies/linucb.py",
    "banditd/policies/thompson.py",
    "banditd/policies/choice.py",
    "banditd/policies/spec.py",
    "banditd/feedback/joiner.py",
    "banditd/feedback/ids.py",
    "banditd/feedback/window.py",
    "banditd/state/memory_store.py",
    "banditd/state/tombstones.py",
    "banditd/features/schema.py",
    "banditd/server/service.py",
    "banditd/server/metrics.py",
    "banditd/server/request_log.py",
    "banditd/types.py",
    "banditd/errors.py",
)
# Unit tests, and the integration tests that run the memory store (and its contract with Redis).
TESTS = (
    "tests/unit",
    "tests/integration/test_service.py",
    "tests/integration/test_guard.py",
    "tests/integration/test_status.py",
    "tests/integration/test_reward_window.py",
    "tests/integration/test_paging.py",
    "tests/integration/test_redis_store.py",
)
PURE, COMPILED = "pure Python", "mypyc"
_SETUP = """\
import os
from setuptools import setup
from mypyc.build import mypycify
modules = os.environ["BANDITD_MYPYC_MODULES"].split()
setup(name="banditd-mypyc-trial", packages=[], ext_modules=mypycify(modules, opt_level="3"))
"""


def build(tree: Path, modules: Sequence[str] = MODULES) -> float:
    """Copy the tracked files to `tree` and compile `modules` in place; seconds it took."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (tree / "mypyc_setup.py").write_text(_SETUP)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "mypyc_setup.py", "build_ext", "--inplace"],
        cwd=tree, env={**child_env(), "BANDITD_MYPYC_MODULES": " ".join(modules)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"mypyc build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def compiled_modules(tree: Path, modules: Sequence[str] = MODULES) -> list[str]:
    """The dotted names of `modules` that a process started in `tree` imports as extensions."""
    names = [m.removesuffix(".py").replace("/", ".") for m in modules]
    probe = (
        "import importlib, sys\n"
        "for n in sys.argv[1:]:\n"
        "    f = importlib.import_module(n).__file__ or ''\n"
        "    print(n if f.endswith('.so') else '')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *names], cwd=tree, env=child_env(),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.split() if line]


def run_tests(tree: Path, paths: Sequence[str] = TESTS) -> dict[str, object]:
    """pytest over `paths` in `tree`: counts from its summary line, and the failed test ids."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *paths],
        cwd=tree, env={**child_env(), "BANDITD_REQUIRE_REDIS": "1"},
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", tail)}
    failed = re.findall(r"^FAILED (\S+)", done.stdout, flags=re.MULTILINE)
    return {"exit": done.returncode, "summary": tail, "seconds": time.perf_counter() - start,
            **counts, "failed_ids": failed}  # fmt: skip


def handler_runs(
    trees: dict[str, Path], shape: tuple[int, int], repeats: int, quick: bool, workdir: Path
) -> dict[str, dict[str, list[float]]]:
    """Per tree: handler CPU µs per round trip, hot and cold, one value per repeat."""
    dim, arms = shape
    config = workdir / f"handler-{dim}x{arms}.toml"
    config.write_text(daemon_config(0, dim, arms, "linucb", "memory", ""))
    argv = ["handler", "--config", str(config), "--dim", str(dim), "--arms", str(arms),
            "--calls", "100" if quick else "500", "--chunks", "1" if quick else "5"]  # fmt: skip
    out: dict[str, dict[str, list[float]]] = {n: {"hot": [], "cold": []} for n in trees}
    names = list(trees)
    for repeat in range(repeats):
        for name in names[repeat % 2 :] + names[: repeat % 2]:
            hot = run_client(argv, cpu=SERVER_CPU, cwd=trees[name])
            cold = run_client([*argv, "--evict-mb", "4"], cpu=SERVER_CPU, cwd=trees[name])
            out[name]["hot"].append(float(hot["pair_cpu_us"]))  # type: ignore[arg-type]
            out[name]["cold"].append(float(cold["pair_cpu_us"]))  # type: ignore[arg-type]
    return out


CALLGRIND_CALLS = (100, 400)  # two runs; their difference cancels start-up and imports


def instructions(tree: Path, shape: tuple[int, int], workdir: Path) -> float | None:
    """Instructions per handler round trip under valgrind's callgrind (None: no valgrind).

    Deterministic, so one run pair gives the figure that CPU time gives only through noise; it
    counts no cache misses. `loadgen handler --chunks 1` runs 2 × calls round trips.
    """
    if shutil.which("valgrind") is None:
        return None
    dim, arms = shape
    config = workdir / f"handler-{dim}x{arms}.toml"
    config.write_text(daemon_config(0, dim, arms, "linucb", "memory", ""))
    counts = []
    for calls in CALLGRIND_CALLS:
        out = workdir / f"callgrind-{tree.name}-{dim}x{arms}-{calls}.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                "-m", "bench.loadgen", "handler", "--config", str(config), "--dim", str(dim),
                "--arms", str(arms), "--calls", str(calls), "--chunks", "1"]  # fmt: skip
        # valgrind has no AVX-512: OpenBLAS's Haswell kernels instead of SkylakeX ones.
        env = {**child_env(), "OPENBLAS_CORETYPE": "Haswell"}
        subprocess.run(argv, cwd=tree, env=env, capture_output=True, check=True, timeout=1800)
        summary = re.search(r"^summary: (\d+)", out.read_text(), flags=re.MULTILINE)
        assert summary is not None, f"no summary line in {out}"
        counts.append(int(summary.group(1)))
    return (counts[1] - counts[0]) / (2 * (CALLGRIND_CALLS[1] - CALLGRIND_CALLS[0]))


def grpc_runs(
    trees: dict[str, Path], shape: tuple[int, int], plan: Plan, workdir: Path
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """One daemon per tree; bench.grpc's interleaved sequential and loaded runs (not batched)."""
    dim, arms = shape
    processes: list[Process] = []
    targets: dict[str, str] = {}
    pids: dict[str, int] = {}
    try:
        for name, tree in trees.items():
            own = workdir / name.replace(" ", "-")
            own.mkdir(exist_ok=True)
            process, address = start_daemon(own, dim, arms, "linucb", "memory", "", cwd=tree)
            processes.append(process)
            targets[name], pids[name] = address, process.proc.pid
        return measure(targets, pids, plan, dim, arms, unbatched=list(trees))
    finally:
        for process in reversed(processes):
            process.stop()


def _paired(ours: Sequence[float], base: Sequence[float]) -> str:
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    return (
        f"{100 * statistics.median(ratios):.0f}% ({100 * min(ratios):.0f}-{100 * max(ratios):.0f}%)"
    )


def _percent(ours: float, base: float) -> str:
    return f"{100 * ours / base:.0f}%"


def summarise(
    shape: tuple[int, int],
    handler: dict[str, dict[str, list[float]]],
    grpc: dict[str, dict[str, list[dict[str, object]]]],
    counted: dict[str, float | None],
) -> list[dict[str, object]]:
    """One row per measure: medians for pure and compiled, compiled/pure as a ratio of medians,
    of minimums (this machine's noise only ever adds time) and paired per repeat."""

    def series(name: str, mode: str, key: str) -> list[float]:
        return [float(r[key]) for r in grpc[name][mode]]  # type: ignore[arg-type]

    def p(name: str, mode: str, which: str) -> list[float]:
        return [float(r["pair"][which]) for r in grpc[name][mode]]  # type: ignore[index]

    measures: list[tuple[str, list[float], list[float]]] = [
        ("handler CPU µs/rt, hot loop", handler[PURE]["hot"], handler[COMPILED]["hot"]),
        ("handler CPU µs/rt, cold caches", handler[PURE]["cold"], handler[COMPILED]["cold"]),
    ]
    for mode, label in (("conc", "64 in flight"), ("seq", "sequential")):
        measures += [
            (f"{label}: round trips/s", series(PURE, mode, "round_trips_per_s"),
             series(COMPILED, mode, "round_trips_per_s")),
            (f"{label}: server CPU µs/rt", series(PURE, mode, "server_cpu_us"),
             series(COMPILED, mode, "server_cpu_us")),
            (f"{label}: p50 µs per rt", p(PURE, mode, "p50_us"), p(COMPILED, mode, "p50_us")),
            (f"{label}: p99 µs per rt", p(PURE, mode, "p99_us"), p(COMPILED, mode, "p99_us")),
        ]  # fmt: skip
    pure_ir, compiled_ir = counted[PURE], counted[COMPILED]
    if pure_ir is not None and compiled_ir is not None:
        measures.insert(0, ("handler instructions/rt (callgrind)", [pure_ir], [compiled_ir]))
    return [
        {
            "shape": f"d={shape[0]}, K={shape[1]}",
            "measure": label,
            PURE: statistics.median(pure),
            COMPILED: statistics.median(compiled),
            "ratio of medians": _percent(statistics.median(compiled), statistics.median(pure)),
            "of minimums": _percent(min(compiled), min(pure)),
            "paired per repeat: median (range)": _paired(compiled, pure),
        }
        for label, pure, compiled in measures
    ]


def main(
    quick: bool = False,
    shapes: Sequence[tuple[int, int]] | None = None,
    repeats: int | None = None,
    tests: bool = True,
    keep: str = "",
) -> dict[str, object]:
    plan = QUICK if quick else FULL
    repeats = repeats or plan.repeats
    plan = Plan(repeats, plan.calls, plan.seconds, plan.warmup_seconds, plan.inflight, plan.batch)
    shapes = shapes or ([(32, 16)] if quick else [(32, 16), (8, 4)])
    result: dict[str, object] = {"modules": list(MODULES), "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="bench-mypyc-") as tmp:
        workdir = Path(keep) if keep else Path(tmp)
        tree = workdir / "compiled"
        print(f"== mypyc trial: compiling {len(MODULES)} modules in {tree} ==", flush=True)
        result["build_s"] = build(tree)
        compiled = compiled_modules(tree)
        pure = compiled_modules(ROOT)
        print(f"  built in {result['build_s']:.0f} s; the copy imports {len(compiled)} of"
              f" {len(MODULES)} as extensions, this tree {len(pure)}", flush=True)  # fmt: skip
        if len(compiled) != len(MODULES) or pure:
            raise RuntimeError(f"compiled: {compiled}; pure tree compiled: {pure}")
        trees = {PURE: ROOT, COMPILED: tree}
        rows: list[dict[str, object]] = []
        for shape in shapes:
            print(f"-- d={shape[0]}, K={shape[1]}: {repeats} interleaved repeats --", flush=True)
            counted = {
                n: None if quick else instructions(t, shape, workdir) for n, t in trees.items()
            }
            handler = handler_runs(trees, shape, repeats, quick, workdir)
            grpc = grpc_runs(trees, shape, plan, workdir)
            rows += summarise(shape, handler, grpc, counted)
            result[f"{shape[0]}x{shape[1]}"] = {
                "instructions": counted, "handler": handler, "grpc": grpc,
            }  # fmt: skip
        show(rows, f"mypyc ({len(MODULES)} modules) against pure Python, medians of {repeats}")
        result["rows"] = rows
        if tests:
            for name, where in trees.items():
                outcome = run_tests(where)
                result[f"tests {name}"] = outcome
                print(f"  tests ({' '.join(TESTS)}) on {name}: {outcome['summary']}"
                      f" [{outcome['seconds']:.0f} s]", flush=True)  # fmt: skip
                for test_id in outcome["failed_ids"]:  # type: ignore[attr-defined]
                    print(f"    FAILED {test_id}")
    return result


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mypyc", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shape", type=_shape, action="append", help="DxK (default 32x16, 8x4)")
    parser.add_argument("--repeats", type=int, default=0, help="default 5 (quick: 1)")
    parser.add_argument("--no-tests", action="store_true", help="skip the test runs")
    parser.add_argument("--keep", default="", help="build in this dir and keep it")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main(args.quick, args.shape, args.repeats or None, not args.no_tests, args.keep)


if __name__ == "__main__":
    cli()
