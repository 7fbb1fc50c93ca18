"""The Open Bandit Dataset sample that ships inside the `obp` wheel, read without obp.

obp 0.4.1 imports torch at import time and its `OpenBanditDataset` loader crashes on pandas 2
(`DataFrame.drop(col, 1)`), so we locate the package directory with importlib (no import) and
read the CSVs with pandas, mirroring `OpenBanditDataset.pre_process`: the context is the
one-hot (drop_first) encoding of the four `user_feature_*` columns.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt

from banditd.sim.logged import LoggedData

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def obd_dir() -> Path:
    spec = importlib.util.find_spec("obp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "obp is not installed: `pip install --no-deps obp==0.4.1` (see the `ope` extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset" / "obd"


def load_obd(
    behavior: str = "random", campaign: str = "all", path: Path | None = None
) -> LoggedData:
    """One of the six 10,000-row logs: behavior random|bts, campaign all|men|women."""
    import pandas as pd

    if behavior not in ("random", "bts") or campaign not in ("all", "men", "women"):
        raise ValueError("behavior must be random|bts and campaign all|men|women")
    csv = (path or obd_dir()) / behavior / campaign / f"{campaign}.csv"
    frame = pd.read_csv(csv, index_col=0)
    users = frame.loc[:, frame.columns.str.contains("user_feature")]
    context = pd.get_dummies(users, drop_first=True).to_numpy(dtype=np.float64)
    item_context = pd.read_csv(csv.parent / "item_context.csv", index_col=0)
    return LoggedData(
        x=context,
        action=frame["item_id"].to_numpy(dtype=np.int64),
        reward=frame["click"].to_numpy(dtype=np.float64),
        pscore=frame["propensity_score"].to_numpy(dtype=np.float64),
        position=np.unique(frame["position"].to_numpy(), return_inverse=True)[1].astype(np.int64),
        n_actions=int(item_context.shape[0]),
        name=f"obd/{behavior}/{campaign}",
    )
