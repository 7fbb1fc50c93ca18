"""Policy math: decisions+updates per second and regret on one synthetic stream, next to peers.

Contenders (all on the same arrays, see bench/stream.py; d=32, K=16; α = v = 0.5, λ = 1):
  banditd LinUCB / Thompson   banditd.policies.{linucb,thompson}.choose_stacked + linear.update,
                              with the arms' A⁻¹ and θ kept stacked (K, d+1, d) and the updated
                              arm's row overwritten, as the Router's cache does (linear.restack)
  banditd Router ...          the full in-process decision path: Router.route + Router.feedback
                              over InMemoryModelStore (validation, pending log, join, update)
  MABWiser LinUCB / LinTS     predict(ctx[None]) then partial_fit([a], [r], ctx[None])
  VW squarecb / epsilon       --cb_explore_adf -q sa; predict(lines) -> pmf, learn(labelled lines)

Warm start: the first K rounds play arm t mod K (MABWiser needs a fit() before its first
predict); they are not timed. One round = one decision plus one update, timed together; slow
contenders stop at a wall-clock budget per repeat (`done` says how far they got). Throughput is
the median over repeats; regret and decisions come from the first repeat.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.stream import F64, Stream, make_stream
from bench.table import show

DIM, ARMS, ALPHA, V, L2, SEED = 32, 16, 0.5, 0.5, 1.0, 1


@dataclass(frozen=True)
class Plan:
    rounds: int  # stream length T
    repeats: int  # fresh runs per contender (throughput median over these)
    budget_s: float  # wall-clock cap per run


FULL = Plan(rounds=10_000, repeats=3, budget_s=3.0)
QUICK = Plan(rounds=300, repeats=1, budget_s=2.0)


@dataclass
class Result:
    name: str
    arms: F64  # chosen arm per round of the first repeat (length = rounds done)
    rates: list[float] = field(default_factory=list)  # online rounds per second, per repeat

    @property
    def done(self) -> int:
        return int(self.arms.shape[0])


Step = Callable[[int], int]  # round t -> chosen arm (decides, observes reward, updates)


def timed(
    stream: Stream, warm: Callable[[int, int], None], step: Step, budget_s: float
) -> tuple[F64, float]:
    """Warm-start rounds (untimed), then online rounds until T or the budget; (arms, rate)."""
    k, total = stream.arms, stream.rounds
    arms = np.empty(total)
    for t in range(k):
        warm(t, t % k)
        arms[t] = t % k
    start = time.perf_counter()
    deadline = start + budget_s
    t = k
    while t < total:
        arms[t] = step(t)
        t += 1
        if t % 64 == 0 and time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    return arms[:t], (t - k) / elapsed


# -- contenders ---------------------------------------------------------------------------
def banditd_policy(algorithm: str) -> Callable[[Stream, float], tuple[F64, float]]:
    def run(stream: Stream, budget_s: float) -> tuple[F64, float]:
        from banditd.policies import linear, linucb, thompson

        x_all, r_all, k = stream.x, stream.reward, stream.arms
        states = [linear.prior(stream.dim, L2)] * k
        penalty = np.zeros(k)
        rng = np.random.default_rng(SEED)
        ucb = linucb.LinUCBParams(ALPHA, L2)
        ts = thompson.ThompsonParams(V, L2)
        choose = linucb.choose_stacked if algorithm == "linucb" else thompson.choose_stacked
        params = ucb if algorithm == "linucb" else ts

        block = linear.stack(states)

        def warm(t: int, arm: int) -> None:
            states[arm] = linear.update(states[arm], x_all[t], r_all[t, arm])
            block.a_inv[arm], block.theta[arm] = states[arm].a_inv, states[arm].theta

        def step(t: int) -> int:
            x = x_all[t]
            choice = choose(block, x, penalty, params, rng)  # type: ignore[arg-type]
            arm = choice.index
            states[arm] = linear.update(states[arm], x, r_all[t, arm])
            block.a_inv[arm], block.theta[arm] = states[arm].a_inv, states[arm].theta
            return arm

        return timed(stream, warm, step, budget_s)

    return run


class _Clock:
    def now(self) -> float:
        return time.time()


class _Passthrough:
    """FeatureExtractor: the context's embedding is the vector (the stream's x_t)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.fingerprint = f"bench-passthrough-{dim}"

    async def extract(self, context: object) -> F64:
        return np.asarray(context.embedding, dtype=np.float64)  # type: ignore[attr-defined]


def banditd_router(algorithm: str) -> Callable[[Stream, float], tuple[F64, float]]:
    def run(stream: Stream, budget_s: float) -> tuple[F64, float]:
        return asyncio.run(_router_loop(stream, algorithm, budget_s))

    return run


async def _router_loop(stream: Stream, algorithm: str, budget_s: float) -> tuple[F64, float]:
    from banditd.policies.spec import PolicyConfig
    from banditd.router import Router
    from banditd.state.memory_store import InMemoryModelStore
    from banditd.types import Candidate, Context

    k, total, x_all, r_all = stream.arms, stream.rounds, stream.x, stream.reward
    ids = tuple(f"a{i}" for i in range(k))
    config = PolicyConfig(
        name="bench", algorithm=algorithm, alpha=ALPHA, v=V, l2=L2, arms=ids,  # type: ignore[arg-type]
        reward_wait_s=86_400.0,
    )  # fmt: skip
    extractor = _Passthrough(stream.dim)
    router = Router(
        {"bench": config}, lambda _: extractor, InMemoryModelStore(), _Clock(),
        np.random.default_rng(SEED),
    )  # fmt: skip
    candidates = [Candidate(i) for i in ids]
    arms = np.empty(total)
    for t in range(k):  # warm start: a single candidate forces the arm
        result = await router.route("bench", "", Context(embedding=x_all[t]), [candidates[t]])
        await router.feedback(result.decision_id, float(r_all[t, t]), {})
        arms[t] = t
    start = time.perf_counter()
    deadline = start + budget_s
    t = k
    while t < total:
        result = await router.route("bench", "", Context(embedding=x_all[t]), candidates)
        arm = result.choice.index
        await router.feedback(result.decision_id, float(r_all[t, arm]), {})
        arms[t] = arm
        t += 1
        if t % 64 == 0 and time.perf_counter() > deadline:
            break
    return arms[:t], (t - k) / (time.perf_counter() - start)


def mabwiser(algorithm: str) -> Callable[[Stream, float], tuple[F64, float]]:
    def run(stream: Stream, budget_s: float) -> tuple[F64, float]:
        from mabwiser.mab import MAB, LearningPolicy

        k, x_all, r_all = stream.arms, stream.x, stream.reward
        policy = (
            LearningPolicy.LinUCB(alpha=ALPHA, l2_lambda=L2)
            if algorithm == "linucb"
            else LearningPolicy.LinTS(alpha=V, l2_lambda=L2)
        )
        mab = MAB(arms=list(range(k)), learning_policy=policy, seed=SEED)
        warm_rows = list(range(k))
        mab.fit(
            decisions=[t % k for t in warm_rows],
            rewards=[r_all[t, t % k] for t in warm_rows],
            contexts=x_all[:k],
        )

        def step(t: int) -> int:
            ctx = x_all[t][None]
            arm = int(mab.predict(ctx))
            mab.partial_fit([arm], [r_all[t, arm]], ctx)
            return arm

        return timed(stream, lambda t, a: None, step, budget_s)

    return run


def vowpal(explore: str) -> Callable[[Stream, float], tuple[F64, float]]:
    def run(stream: Stream, budget_s: float) -> tuple[F64, float]:
        from vowpalwabbit import Workspace

        k, x_all, r_all = stream.arms, stream.x, stream.reward
        ws = Workspace(f"--cb_explore_adf {explore} -q sa --quiet --random_seed {SEED}")
        actions = [f"|a a{i}" for i in range(k)]
        rng = np.random.default_rng(SEED)

        def shared(t: int) -> str:
            return "shared |s " + " ".join(f"f{j}:{v:.6g}" for j, v in enumerate(x_all[t]))

        def learn(t: int, head: str, arm: int, prob: float) -> None:
            lines = [head, *actions]
            lines[1 + arm] = f"0:{-r_all[t, arm]:.6g}:{prob:.6g} {actions[arm]}"
            ws.learn(lines)

        def warm(t: int, arm: int) -> None:
            learn(t, shared(t), arm, 1.0 / k)

        def step(t: int) -> int:
            head = shared(t)
            pmf = np.asarray(ws.predict([head, *actions]))
            arm = min(int(np.searchsorted(np.cumsum(pmf), rng.random() * pmf.sum())), k - 1)
            learn(t, head, arm, float(pmf[arm]))
            return arm

        try:
            return timed(stream, warm, step, budget_s)
        finally:
            ws.finish()

    return run


CONTENDERS: dict[str, Callable[[Stream, float], tuple[F64, float]]] = {
    "banditd LinUCB": banditd_policy("linucb"),
    "banditd Thompson": banditd_policy("thompson"),
    "banditd Router LinUCB": banditd_router("linucb"),
    "banditd Router Thompson": banditd_router("thompson"),
    "MABWiser LinUCB": mabwiser("linucb"),
    "MABWiser LinTS": mabwiser("thompson"),
    "VW squarecb": vowpal("--squarecb"),
    "VW epsilon 0.05": vowpal("--epsilon 0.05"),
}


# -- the section ----------------------------------------------------------------------------
def measure(plan: Plan, names: Sequence[str] | None = None) -> list[Result]:
    """Repeats are interleaved across contenders, so a noisy spell hits all of them alike."""
    stream = make_stream(plan.rounds, DIM, ARMS, seed=SEED)
    chosen = [n for n in CONTENDERS if names is None or n in names]
    results = {n: Result(n, np.empty(0)) for n in chosen}
    for repeat in range(plan.repeats):
        for name in chosen:
            arms, rate = CONTENDERS[name](stream, plan.budget_s)
            if repeat == 0:
                results[name].arms = arms
            results[name].rates.append(rate)
    return list(results.values())


def cumulative_regret(stream: Stream, arms: F64) -> F64:
    n = arms.shape[0]
    picked = stream.mu[np.arange(n), arms.astype(np.int64)]
    return np.cumsum(stream.mu[:n].max(axis=1) - picked)


def summarise(plan: Plan, results: Sequence[Result]) -> dict[str, object]:
    stream = make_stream(plan.rounds, DIM, ARMS, seed=SEED)
    common = min(r.done for r in results)
    rows: list[dict[str, object]] = []
    by_name = {r.name: r for r in results}
    for r in results:
        regret = cumulative_regret(stream, r.arms)
        rate = statistics.median(r.rates)
        rows.append({
            "implementation": r.name,
            "rounds/s (median)": rate,
            "µs/round": 1e6 / rate,
            "runs": len(r.rates),
            "min..max rounds/s": f"{min(r.rates):,.0f}..{max(r.rates):,.0f}",
            "done": r.done,
            f"regret@{common}": float(regret[common - 1]),
            "regret@done": float(regret[-1]),
        })  # fmt: skip
    ratios: dict[str, float] = {}
    agreement: dict[str, float] = {}
    for ours, theirs in (
        ("banditd LinUCB", "MABWiser LinUCB"),
        ("banditd Thompson", "MABWiser LinTS"),
        ("banditd Router LinUCB", "MABWiser LinUCB"),
        ("banditd Router Thompson", "MABWiser LinTS"),
    ):
        if ours in by_name and theirs in by_name:
            a, b = by_name[ours], by_name[theirs]
            ratios[f"{ours} / {theirs}"] = statistics.median(a.rates) / statistics.median(b.rates)
    # Deterministic policies only: Thompson draws depend on how each path consumes its rng.
    for a_name, b_name in (
        ("banditd LinUCB", "MABWiser LinUCB"),
        ("banditd LinUCB", "banditd Router LinUCB"),
    ):
        if a_name in by_name and b_name in by_name:
            left, right = by_name[a_name].arms, by_name[b_name].arms
            n = min(left.shape[0], right.shape[0])
            agreement[f"{a_name} vs {b_name}"] = float(np.mean(left[:n] == right[:n]))
    return {
        "stream": {
            "dim": DIM, "arms": ARMS, "rounds": plan.rounds, "seed": SEED,
            "noise": stream.noise, "alpha": ALPHA, "v": V, "l2": L2,
            "uniform_regret_per_round": float(
                (stream.mu.max(axis=1) - stream.mu.mean(axis=1)).mean()
            ),
        },
        "plan": {"repeats": plan.repeats, "budget_s": plan.budget_s},
        "rows": rows,
        "common_rounds": common,
        "speed_ratios": ratios,
        "decision_agreement": agreement,
    }  # fmt: skip


def main(quick: bool = False) -> dict[str, object]:
    plan = QUICK if quick else FULL
    print(
        f"== policy math: d={DIM}, K={ARMS}, T={plan.rounds}, alpha=v={ALPHA}, l2={L2}, "
        f"{plan.repeats} repeat(s), budget {plan.budget_s:g} s/run ==",
        flush=True,
    )
    summary = summarise(plan, measure(plan))
    show(summary["rows"], "decisions+updates per second (one decision + one update per round)")  # type: ignore[arg-type]
    uniform = summary["stream"]["uniform_regret_per_round"]  # type: ignore[index]
    print(f"  a uniform-random policy would have regret ≈ {uniform:.3f} per round")
    for label, ratio in summary["speed_ratios"].items():  # type: ignore[attr-defined]
        print(f"  speed ratio {label}: {ratio:.1f}x (target ≥ 10x for the policy math)")
    for label, share in summary["decision_agreement"].items():  # type: ignore[attr-defined]
        print(f"  same arm chosen, {label}: {100 * share:.2f}% of common rounds")
    print(flush=True)
    return summary


if __name__ == "__main__":
    import sys

    main(quick="--quick" in sys.argv)
