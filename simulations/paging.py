"""Adapter paging simulation: POLAR, POLAR+ and baselines; writes a JSON summary and a PNG.

    python simulations/paging.py --horizon 50000 --seeds 5 --out simulations/out/paging

(`make sim-paging`). Scenario and policies: banditd/sim/paging.py; results: docs/paging.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from banditd.sim.paging import POLICIES, PagingScenario, run, slope

LABELS = {"lru": "LRU + LinUCB", "lfu": "LFU + LinUCB", "static": "static top-K",
          "polar": "POLAR", "polar+": "POLAR+", "oracle": "oracle"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--horizon", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("simulations/out/paging"))
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="POLAR+ parts: doubling with c in {0, 0.25, 1} vs fixed-epoch POLAR",
    )
    args = ap.parse_args()
    if args.ablation:
        _ablation(args.horizon, args.seeds)
        return
    scenario = dataclasses.replace(PagingScenario(), horizon=args.horizon)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    curves: dict[str, np.ndarray] = {}
    summary: dict[str, object] = {"scenario": dataclasses.asdict(scenario), "seeds": args.seeds,
                                  "policies": {}}  # fmt: skip
    for policy in POLICIES:
        results = [run(policy, scenario, seed) for seed in range(args.seeds)]
        regrets = np.array([r.regret for r in results])
        curves[policy] = regrets
        mean = regrets.mean(0)
        summary["policies"][policy] = {  # type: ignore[index]
            "regret_final_mean": float(mean[-1]),
            "regret_final_sd": float(regrets[:, -1].std(ddof=1)) if args.seeds > 1 else 0.0,
            "regret_final_per_seed": regrets[:, -1].round(1).tolist(),
            "regret_loglog_slope": slope(mean),
            "regret_loglog_slope_per_seed": [slope(r) for r in regrets],
            "paging_latency_s_mean": float(np.mean([r.latency_ms for r in results]) / 1e3),
            "miss_rate_mean": float(np.mean([r.misses for r in results]) / args.horizon),
            "loads_mean": float(np.mean([r.loads for r in results])),
        }
        row = summary["policies"][policy]  # type: ignore[index]
        print(
            f"{policy:7s} regret {row['regret_final_mean']:9.1f} ± {row['regret_final_sd']:7.1f}"
            f"  slope {row['regret_loglog_slope']:.2f}"
            f"  paging {row['paging_latency_s_mean']:8.1f} s"
            f"  miss rate {row['miss_rate_mean']:.3f}  loads {row['loads_mean']:.0f}",
            flush=True,
        )
    # Paired by seed (each seed is its own environment): seeds where row beats column.
    finals = {p: c[:, -1] for p, c in curves.items()}
    summary["wins"] = {p: {q: int(np.sum(finals[p] < finals[q])) for q in finals if q != p}
                       for p in finals}  # fmt: skip
    for p in ("polar", "polar+"):
        print(f"{p} beats (seeds of {args.seeds}):", summary["wins"][p])  # type: ignore[index]
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(curves, summary, args.out / "paging.png")
    print(f"wrote {args.out}/summary.json and paging.png in {summary['wall_s']} s")


def _ablation(horizon: int, seeds: int) -> None:
    """Which part of POLAR+ costs what: epoch doubling alone, and with forced exploration."""
    base = dataclasses.replace(PagingScenario(), horizon=horizon)
    variants = [("polar (fixed epochs)", "polar", 0.0)] + [
        (f"polar+ doubling, c={c}", "polar+", c) for c in (0.0, 0.25, 1.0)
    ]
    for name, policy, c in variants:
        s = dataclasses.replace(base, forced_exploration=c)
        regrets = np.array([run(policy, s, seed).regret for seed in range(seeds)])
        print(
            f"{name:26s} regret {regrets[:, -1].mean():8.1f} ± {regrets[:, -1].std(ddof=1):6.1f}"
            f"  slope {slope(regrets.mean(0)):.2f}",
            flush=True,
        )


def _plot(curves: dict[str, np.ndarray], summary: dict[str, object], path: Path) -> None:
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=72)
    rows = summary["policies"]  # type: ignore[assignment]
    horizon = next(iter(curves.values())).shape[1]
    t = np.arange(1, horizon + 1)
    for policy, regrets in curves.items():
        mean, sd = regrets.mean(0), regrets.std(0)
        label = LABELS[policy]
        ax1.plot(t, mean, label=label)
        ax1.fill_between(t, mean - sd, mean + sd, alpha=0.15)
        if policy != "oracle":
            s = rows[policy]["regret_loglog_slope"]  # type: ignore[index]
            ax2.loglog(t, np.maximum(mean, 1e-3), label=f"{label} (slope {s:.2f})")
    ax1.set(xlabel="requests t", ylabel="cumulative regret (reward units)",
            title="Regret vs best fixed cache + optimal routing")  # fmt: skip
    ax1.legend(fontsize=8)
    ax2.set(xlabel="t", ylabel="regret", title="log-log (slope fitted on [T/10, T])")
    ax2.legend(fontsize=8)
    names = list(curves)
    ax3.bar([LABELS[p] for p in names],
            [rows[p]["paging_latency_s_mean"] for p in names])  # type: ignore[index]  # fmt: skip
    ax3.set(ylabel="total paging latency (s)", title="Paging latency over the run")
    ax3.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
