"""Per-image Hungarian slot matching, shared by the identifiability metrics and the probes.

Convention: ``perm`` has shape (m, k) and ``perm[i, a] = b`` means slot ``a`` of the first set
(the *target*) is matched to slot ``b`` of the second set in image ``i``. ``permute_slots(b, perm)``
reorders the second set so that its slot ``a`` is the one matched to the target's slot ``a``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from probslot.metrics.regression import fit_predict_affine, standardize

__all__ = [
    "MatchCost",
    "SlotMatching",
    "hungarian",
    "match_masks",
    "match_slots",
    "match_slots_mapped",
    "pairwise_cost",
    "permute_slots",
]

MatchCost = Literal["euclidean", "sqeuclidean", "cosine"]


@dataclass(frozen=True)
class SlotMatching:
    """Result of `match_slots`.

    Attributes:
        perm: (m, k) int64, ``perm[i, a]`` = index in the second set matched to target slot ``a``.
        cost: (m,) total matching cost per image (sum of matched pair costs).
    """

    perm: Tensor
    cost: Tensor


def _check_slot_pair(slots_a: Tensor, slots_b: Tensor, *, same_dim: bool) -> None:
    for name, s in (("slots_a", slots_a), ("slots_b", slots_b)):
        if not isinstance(s, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (m, k, d); got {type(s).__name__}"
            )
        if s.ndim != 3:
            raise ValueError(
                f"{name} must have shape (m images, k slots, d dims); got {tuple(s.shape)}. "
                "Stack per-image slots into one (m, k, d) tensor."
            )
    if slots_a.shape[:2] != slots_b.shape[:2]:
        raise ValueError(
            "slot sets must have the same number of images and slots (m, k); got "
            f"slots_a {tuple(slots_a.shape)} and slots_b {tuple(slots_b.shape)}. "
            "Evaluate both models on the same images with the same number of slots."
        )
    if same_dim and slots_a.shape[2] != slots_b.shape[2]:
        raise ValueError(
            "slot sets must have the same slot dimension d here; got "
            f"slots_a {tuple(slots_a.shape)} and slots_b {tuple(slots_b.shape)}. "
            "Use a fitted map (transform='affine' or 'krr') and pass a precomputed `perm`, "
            "e.g. from `match_masks`, to compare slots of different sizes."
        )


def sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """(m, k, k) squared Euclidean distances between rows of a (m, k, d) and b (m, k, d), batched
    with one bmm (`torch.cdist` is slow for many tiny matrices)."""
    sq = (a * a).sum(-1).unsqueeze(-1) + (b * b).sum(-1).unsqueeze(-2) - 2.0 * a @ b.transpose(1, 2)
    return sq.clamp_min(0.0)


def pairwise_cost(slots_a: Tensor, slots_b: Tensor, cost: MatchCost = "euclidean") -> Tensor:
    """(m, k, k) cost between every target slot (rows) and every slot of the second set (columns).

    Args:
        slots_a: (m, k, d) target slots.
        slots_b: (m, k, d) slots to match.
        cost: ``euclidean`` (the authors' code), ``sqeuclidean`` or ``cosine`` (1 − cosine similarity).
    """
    _check_slot_pair(slots_a, slots_b, same_dim=True)
    a, b = slots_a.double(), slots_b.double()
    if cost == "euclidean":
        return sq_distances(a, b).sqrt()
    if cost == "sqeuclidean":
        return sq_distances(a, b)
    if cost == "cosine":
        an = torch.nn.functional.normalize(a, dim=-1)
        bn = torch.nn.functional.normalize(b, dim=-1)
        return 1.0 - an @ bn.transpose(1, 2)
    raise ValueError(f"cost must be 'euclidean', 'sqeuclidean' or 'cosine'; got {cost!r}")


def hungarian(cost: Tensor, maximize: bool = False) -> Tensor:
    """Solve one assignment problem per image.

    Args:
        cost: (m, k, k) cost (or score, with ``maximize=True``) matrices.

    Returns:
        (m, k) int64 ``perm`` with ``perm[i, a]`` the column assigned to row ``a`` of image ``i``.

    The (m, k, k) costs are computed vectorised by the caller; the assignment itself runs scipy's
    `linear_sum_assignment` once per image (about 10 µs each for k ≤ 10, so 10,000 images take
    well under a second).
    """
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape (m, k, k); got {tuple(cost.shape)}")
    c = cost.detach().cpu().double().numpy()
    if not np.isfinite(c).all():
        raise ValueError("cost contains NaN or inf; check the slots for non-finite values")
    perm = np.empty(c.shape[:2], dtype=np.int64)
    for i in range(c.shape[0]):
        _, cols = linear_sum_assignment(c[i], maximize=maximize)
        perm[i] = cols
    return torch.from_numpy(perm).to(cost.device)


def permute_slots(slots: Tensor, perm: Tensor) -> Tensor:
    """(m, k, d) slots reordered so that output slot ``a`` is input slot ``perm[:, a]``."""
    if perm.shape != slots.shape[:2]:
        raise ValueError(
            f"perm must have shape (m, k) = {tuple(slots.shape[:2])}; got {tuple(perm.shape)}"
        )
    idx = perm.to(slots.device).long().unsqueeze(-1).expand(-1, -1, slots.shape[-1])
    return torch.gather(slots, 1, idx)


def match_slots(slots_a: Tensor, slots_b: Tensor, cost: MatchCost = "euclidean") -> SlotMatching:
    """Hungarian-match the slots of ``slots_b`` to those of ``slots_a`` in every image.

    Args:
        slots_a: (m, k, d) target slots.
        slots_b: (m, k, d) slots to match (same d: the cost compares vectors directly).

    Returns:
        `SlotMatching` with ``perm`` (m, k) minimising the summed pair cost per image.
    """
    c = pairwise_cost(slots_a, slots_b, cost)
    perm = hungarian(c)
    total = torch.gather(c, 2, perm.unsqueeze(-1)).squeeze(-1).sum(-1)
    return SlotMatching(perm=perm, cost=total)


def match_masks(masks_a: Tensor, masks_b: Tensor, eps: float = 1e-8) -> SlotMatching:
    """Match slots by the IoU of their soft masks, e.g. ground-truth objects vs model slots.

    Args:
        masks_a: (m, k, h, w) or (m, k, n) non-negative masks of the target slots.
        masks_b: masks of the second set, same shape.

    Returns:
        `SlotMatching` maximising the summed soft IoU (``cost`` holds 1 − mean matched IoU).
    """
    if masks_a.shape != masks_b.shape or masks_a.ndim < 3:
        raise ValueError(
            "masks must both have shape (m, k, ...) and match; got "
            f"{tuple(masks_a.shape)} and {tuple(masks_b.shape)}"
        )
    a = masks_a.flatten(2).double()
    b = masks_b.flatten(2).double()
    inter = a @ b.transpose(1, 2)  # (m, k, k)
    union = a.sum(-1, keepdim=True) + b.sum(-1).unsqueeze(1) - inter
    iou = inter / union.clamp_min(eps)
    perm = hungarian(iou, maximize=True)
    matched = torch.gather(iou, 2, perm.unsqueeze(-1)).squeeze(-1)
    return SlotMatching(perm=perm, cost=1.0 - matched.mean(-1))


def match_slots_mapped(
    slots_a: Tensor,
    slots_b: Tensor,
    train_idx: Tensor | None = None,
    refine_iters: int = 1,
) -> SlotMatching:
    """Affine-invariant matching: Euclidean Hungarian matching after mapping ``slots_b`` into the
    space of ``slots_a`` with an affine map fitted without knowing the matching.

    Two runs of a model are at best equal up to a slot permutation *and an affine map* (paper
    Def. 3), so Euclidean distances between raw slots of different runs are not meaningful. The
    per-image slot mean is permutation invariant, so ``mean_k b = (mean_k a) H + c`` holds
    without correspondences: we fit (H, c) by least squares on the per-image means of the train
    images (both sets standardised with pooled train statistics), match every image by Euclidean
    distance between ``a`` and ``b H + c``, then ``refine_iters`` times refit one pooled affine
    map on the matched train slots and rematch.

    Args:
        slots_a: (m, k, d_a) target slots; slots_b: (m, k, d_b) slots to match (d_b may differ).
        train_idx: images used to fit the maps (default all); needs ≥ d_b + 2 of them.
        refine_iters: pooled refit-and-rematch rounds after the mean-based start.

    Returns:
        `SlotMatching` (cost: summed Euclidean distance in the standardised target space).
    """
    _check_slot_pair(slots_a, slots_b, same_dim=False)
    m, k, d_b = slots_b.shape
    tr = torch.arange(m) if train_idx is None else train_idx.cpu()
    if len(tr) < d_b + 2:
        raise ValueError(
            f"affine-invariant matching needs at least d_b + 2 = {d_b + 2} images to fit its map; "
            f"got {len(tr)}. Use more images, or match_space='raw'."
        )
    a, b = slots_a.detach().double(), slots_b.detach().double()

    def scaled(x: Tensor) -> Tensor:  # pooled over the train images' slots
        d = x.shape[-1]
        return standardize(x[tr].reshape(1, -1, d), x.reshape(1, -1, d))[1].reshape(x.shape)

    a, b = scaled(a), scaled(b)

    # start from the slot-order-free fit of per-image mean slots, then refit on matched pairs
    x_fit, y_fit = b[tr].mean(1), a[tr].mean(1)
    for it in range(refine_iters + 1):
        mapped = fit_predict_affine(x_fit[None], y_fit[None], b.reshape(1, m * k, d_b))
        mapped = mapped[0].reshape(m, k, -1)  # (m, k, d_a)
        dist = sq_distances(a, mapped).sqrt()
        perm = hungarian(dist)
        if it == refine_iters:
            break
        x_fit = permute_slots(b, perm)[tr].reshape(-1, d_b)
        y_fit = a[tr].reshape(-1, a.shape[-1])
    total = torch.gather(dist, 2, perm.unsqueeze(-1)).squeeze(-1).sum(-1)
    return SlotMatching(perm=perm, cost=total)
