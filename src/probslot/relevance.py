"""The relevance rule of automatic relevance determination (paper Eq. 7), in one function.

Every place that asks "which slots count?" calls `relevant`: ARD inside EM
(`probslot.nn.extensions.ARDPrune`), `SlotPosterior.active`, the pruning analysis
(`probslot.posterior.pruning`) and the evaluation's slot counts (`probslot.evaluation`). So
`probslot evaluate` and `probslot prune` report the same active-slot counts at the same τ.

Axis legend (see `probslot.typing`): b batch · k slots.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probslot.validation import check_tau

__all__ = ["check_tau", "relevant"]


def relevant(pi: Tensor, tau: float) -> Tensor:
    """(b, k) bool: the relevant slots of each image, π_k > τ (paper Eq. 7).

    When no slot of an image passes τ, that image keeps its largest slot (the first one on a
    tie), so every image always has at least one slot to decode. A dead slot (π = 0, pruned or
    merged away inside EM) is never relevant, at any τ ≥ 0.

    Args:
        pi: (b, k) mixing weights (rows on the simplex; dead slots 0).
        tau: threshold in [0, 1).
    """
    tau = check_tau(tau)
    if not isinstance(pi, Tensor) or pi.dim() != 2:
        got = tuple(pi.shape) if isinstance(pi, Tensor) else type(pi).__name__
        raise ValueError(f"pi must be a (batch, slots) tensor of mixing weights; got {got}")
    keep = pi > tau  # (b, k)
    none = ~keep.any(-1, keepdim=True)  # (b, 1) images where no slot passes
    top = torch.zeros_like(keep).scatter_(-1, pi.argmax(-1, keepdim=True), True)  # (b, k)
    return keep | (none & top)  # no data-dependent branch: no device sync inside EM
