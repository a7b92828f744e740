"""Positions in the mixture: PSA whose tokens end with their image-plane position (beyond the paper).

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim · c position dims.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from probslot.nn.extensions import EMState
from probslot.nn.psa import ProbabilisticSlotAttention
from probslot.validation import check_float, check_int

__all__ = ["PositionalPSA"]


class PositionalPSA(ProbabilisticSlotAttention):
    """PSA over tokens whose last ``coord_dims`` features are their (y, x) position.

    An encoder built with the same ``coord_dims`` appends them. The positions skip the input
    LayerNorm (which would mix them with the appearance features), so each slot's Gaussian
    covers appearance and position: the last ``coord_dims`` entries of μ are exactly the
    responsibility-weighted centre of the slot's tokens and those of σ² its spatial spread, and
    a decoder built with ``coord_dims`` draws each slot around its centre.

    ``coord_weight`` w ∈ [0, 1] is the power of the positions' likelihood in the E-step,
    A_nk ∝ π_k N(appearance) N(position)^w (the M-step is unchanged): 1 is plain EM on all
    features; w < 1 lets one slot cover a wide region (a background) at a smaller cost against
    slots that each take a compact piece of it, since a Gaussian over positions fits a uniform
    spread poorly; 0 keeps the positions out of the E-step (tokens grouped by appearance alone),
    and the M-step still gives every slot its centre and spread.

    Args:
        coord_dims: position features c at the end of each token (≥ 1, < dim).
        coord_weight: w above.
        **core: every argument of `ProbabilisticSlotAttention`; ``variant`` must be ``"base"``
            or ``"exact"`` (slots live in token space, so their last entries stay positions).
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        slot_dim: int | None = None,
        iters: int = 3,
        *,
        coord_dims: int = 2,
        coord_weight: float = 1.0,
        **core: Any,
    ) -> None:
        variant = core.setdefault("variant", "base")
        if variant == "proj":
            raise ValueError(
                f"positions in the mixture (coord_dims={coord_dims}) need variant 'base' or "
                "'exact' (the 'psa' grouping), whose slots live in token space, so their last "
                "entries stay positions; got variant='proj'"
            )
        c = check_int("coord_dims", coord_dims, low=1)
        if isinstance(dim, int) and c >= dim:
            raise ValueError(
                f"coord_dims must be smaller than dim={dim} to leave appearance features; got {c}"
            )
        super().__init__(num_slots, dim, slot_dim, iters, **core)
        self.coord_dims = c
        self.coord_weight = check_float("coord_weight", coord_weight, low=0.0, high=1.0)
        self.norm_inputs = nn.LayerNorm(self.dim - c)  # appearance features only (same slot)

    def _extra_settings(self) -> dict[str, object]:
        return {"coord_dims": self.coord_dims, "coord_weight": self.coord_weight}

    def normalize(self, inputs: Tensor) -> Tensor:
        """LayerNorm over the appearance features; the positions pass unchanged."""
        c = self.coord_dims
        return torch.cat([self.norm_inputs(inputs[..., :-c]), inputs[..., -c:]], dim=-1)

    def e_step_inputs(self, state: EMState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The positions' likelihood raised to the power w (none at w = 0)."""
        c, w = self.coord_dims, self.coord_weight
        assert state.keys_sq is not None
        if w == 0.0:  # appearance only
            return state.keys[..., :-c], state.keys_sq[..., :-c], state.var[..., :-c], state.log_pi
        if w == 1.0:
            return state.keys, state.keys_sq, state.var, state.log_pi
        # N(x; m, σ²)^w = N(x; m, σ²/w) · (σ²)^{(1−w)/2} · const: the power likelihood is the
        # E-step with the positions' variance divided by w, plus a per-slot term that joins log π
        # (both are tempered alike)
        pos_var = state.var[..., -c:].clamp_min(self.min_var)  # (b, k, c)
        var = torch.cat([state.var[..., :-c], pos_var / w], dim=-1)
        log_pi = state.log_pi + 0.5 * (1.0 - w) * pos_var.log().sum(-1)
        return state.keys, state.keys_sq, var, log_pi
