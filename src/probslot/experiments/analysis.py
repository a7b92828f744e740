"""Shared pieces of the studies' analyses: spreads, cross-seed pairs, table cells.

Cross-seed identifiability is scored over **all** unordered pairs of runs (the authors' code
compared only consecutive runs and, for the 2D data, reported the best 5 of 14 such pairs; paper
notes §11.10): for a pair (i, j) both directions are computed with
`probslot.metrics.smcc_details` (paper Eq. 12; least-squares affine map per slot index fitted on
80 % of the images, Pearson on the held-out 20 %) and averaged, as ``probslot compare`` does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from probslot import metrics as M

__all__ = [
    "cell",
    "mean_std",
    "pairwise_identifiability",
]


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` over the finite values (std None for fewer than 2)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    t = torch.tensor(vals, dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "std": float(t.std()) if len(vals) > 1 else None,
        "n": len(vals),
        "values": vals,
    }


def cell(stats: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.931 ± 0.012`` (sample std; ``n = 1``: the value alone; nothing: ``–``); values below
    0.01 in size get `digits` significant digits instead (``4.21e-05 ± 1.3e-05``)."""
    if not stats or stats.get("mean") is None:
        return "–"
    mean, std = stats["mean"], stats.get("std")
    spec = f".{digits}g" if 0 < abs(mean) < 0.01 else f".{digits}f"
    text = format(mean, spec)
    if std is not None:
        text += " ± " + format(std, f".{max(digits - 1, 1)}g" if spec.endswith("g") else spec)
    return text


def pairwise_identifiability(
    slots: Sequence[Tensor], names: Sequence[str], seed: int = 0, krr: bool = True
) -> dict[str, Any]:
    """SMCC and R² between every pair of runs' slots (each (m, k, d), the same m images).

    Returns ``{"smcc": {mean, std, n, values, pairs: [{"runs": [i, j], "smcc": ...}, ...]},
    "r2": {...}, "r2_krr": {...}, "smcc_chance": {...}, "perms": {(i, j): (m, k) matching}}``;
    each pair's figure is the mean of its two directions.
    """
    n = len(slots)
    if n < 2:
        raise ValueError(f"cross-seed identifiability needs at least 2 runs; got {n}")
    directed: dict[str, dict[tuple[int, int], float]] = {
        "smcc": {},
        "r2": {},
        "r2_krr": {},
        "smcc_chance": {},
    }
    perms: dict[tuple[int, int], Tensor] = {}
    for i, j in itertools.permutations(range(n), 2):
        a, b = slots[i].double(), slots[j].double()
        res = M.smcc_details(a, b, transform="affine", chance=True, seed=seed)
        perms[i, j] = res.perm
        directed["smcc"][i, j] = float(res.score)
        directed["smcc_chance"][i, j] = float(res.chance)
        same = {"perm": res.perm, "seed": seed}
        directed["r2"][i, j] = float(M.slot_r2_details(a, b, transform="affine", **same).score)
        if krr:
            directed["r2_krr"][i, j] = float(M.slot_r2_details(a, b, transform="krr", **same).score)
    out: dict[str, Any] = {"perms": perms}
    for key, vals in directed.items():
        if not vals:
            continue
        pairs = [
            {"runs": [names[i], names[j]], key: (vals[i, j] + vals[j, i]) / 2}
            for i, j in itertools.combinations(range(n), 2)
        ]
        out[key] = {**mean_std(p[key] for p in pairs), "pairs": pairs}
    return out
