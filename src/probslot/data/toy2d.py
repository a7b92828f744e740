"""The paper's 2D synthetic data (paper-notes §6): points from 3 of 5 Gaussian modes per item.

Modes are centred at (0, 0), (10, 10), (−10, −10), (−10, 10), (10, −10) with covariance 0.5·I.
Each item picks 3 distinct modes uniformly at random and draws points from them:

- ``split="per_mode"`` (paper text): ``points_per_item`` points from *each* chosen mode
  (P = 3 · points_per_item);
- ``split="total"`` (authors' code): ``points_per_item`` points in all, split
  ⌊P/3⌋, ⌊P/3⌋ and the rest (42/42/44 for 128).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from probslot.data.contract import register_dataset
from probslot.validation import check_bool, check_int, is_int

__all__ = ["TOY2D_CENTRES", "TOY2D_VARIANCE", "Toy2DDataset"]

#: (5, 2) mode centres; a point's label is the row of its mode here.
TOY2D_CENTRES = np.array([[0.0, 0.0], [10.0, 10.0], [-10.0, -10.0], [-10.0, 10.0], [10.0, -10.0]])
#: isotropic variance of every mode (covariance 0.5·I).
TOY2D_VARIANCE = 0.5


@register_dataset("toy2d")
class Toy2DDataset(torch.utils.data.Dataset):
    """Sets of 2D points from 3 of 5 Gaussian modes; deterministic per (seed, index).

    Items are dicts:

    - ``points``: float32 (P, 2), in a random order;
    - ``labels``: int64 (P,), the mode (row of `TOY2D_CENTRES`, 0..4) each point came from;
    - ``modes``: int64 (3,), the chosen modes, sorted;
    - ``num_objects``: int, always 3.

    Args:
        num_samples: dataset length (the paper trains on 1000).
        points_per_item: points per mode (``per_mode``) or per item (``total``); >= 3.
        split: ``"per_mode"`` (paper text, default) or ``"total"`` (authors' code).
        standardize: standardise each item's points per coordinate (zero mean, unit variance
            over the item's P points), as the authors' code does.
        seed: >= 0.
    """

    num_modes = 5
    modes_per_item = 3

    def __init__(
        self,
        num_samples: int = 1000,
        points_per_item: int = 128,
        split: Literal["per_mode", "total"] = "per_mode",
        standardize: bool = False,
        seed: int = 0,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, low=0)
        self.points_per_item = check_int("points_per_item", points_per_item, low=3)
        self.seed = check_int("seed", seed, low=0)
        if split not in ("per_mode", "total"):
            raise ValueError(
                f"split must be 'per_mode' (paper: points_per_item from each mode) or 'total' "
                f"(authors' code: points_per_item in all); got {split!r}"
            )
        self.split = split
        self.standardize = check_bool("standardize", standardize)
        self.centres = TOY2D_CENTRES.copy()
        self.variance = TOY2D_VARIANCE

    @property
    def num_points(self) -> int:
        """P, points per item."""
        if self.split == "per_mode":
            return self.points_per_item * self.modes_per_item
        return self.points_per_item

    def counts(self) -> list[int]:
        """Points drawn from each of the 3 chosen modes (sum = P)."""
        if self.split == "per_mode":
            return [self.points_per_item] * self.modes_per_item
        base = self.points_per_item // self.modes_per_item
        return [base, base, self.points_per_item - 2 * base]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item `index`: ``points`` (P, 2), ``labels`` (P,), ``modes`` (3,), ``num_objects``."""
        if not is_int(index):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        i = int(index) + (self.num_samples if index < 0 else 0)
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index must be in [0, {self.num_samples}); got {index}")
        rng = np.random.default_rng([self.seed, i])
        modes = np.sort(rng.choice(self.num_modes, size=self.modes_per_item, replace=False))
        # the mode that gets the remainder in the "total" split is random, not always the last
        labels = np.repeat(rng.permutation(modes), self.counts())
        noise = rng.standard_normal((labels.shape[0], 2)) * np.sqrt(self.variance)
        points = self.centres[labels] + noise
        order = rng.permutation(labels.shape[0])
        points, labels = points[order], labels[order]
        if self.standardize:
            points = (points - points.mean(0)) / points.std(0)
        return {
            "points": torch.from_numpy(points.astype(np.float32)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "modes": torch.from_numpy(modes.astype(np.int64)),
            "num_objects": self.modes_per_item,
        }
