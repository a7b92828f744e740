"""Small layers and input checks shared by the grouping modules.

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from probslot.validation import check_int, check_positive_int

__all__ = [
    "Draw",
    "ResidualMLP",
    "check_grouping_inputs",
    "prepare_grouping_inputs",
    "resolve_num_slots",
    "slot_noise",
]

#: Which draw of the random initial slots a forward call uses: None = the default (a fresh random
#: draw in training mode, the fixed draw 0 in eval mode), "random" = a fresh draw from torch's
#: global generator, an int ≥ 0 = that fixed draw (see `slot_noise`).
Draw = int | Literal["random"] | None

#: Seed offset of the fixed draws, so that draw 0 is not the stream of `torch.manual_seed(0)`.
_DRAW_SEED = 0x5EED_5107


def slot_noise(
    shape: tuple[int, int, int],
    draw: Draw,
    training: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """ε ~ N(0, I) of `shape` (b, k, d) for the initial slots of one forward call.

    A fixed draw (an int, or None in eval mode = draw 0) is the same (k, d) noise for every image,
    from a CPU generator seeded by the draw's number: the slots of an image then do not depend on
    the batch it is in, the device, or torch's global random state, so inference is
    deterministic. "random" (and None in training mode) draws from torch's global generator, as
    training needs.
    """
    if draw is None:
        draw = "random" if training else 0
    if draw == "random":
        return torch.randn(shape, device=device, dtype=dtype)
    check_int("draw", draw, low=0, hint='or "random" / None')
    b, k, d = shape
    generator = torch.Generator().manual_seed(_DRAW_SEED + int(draw))
    eps = torch.randn((1, k, d), generator=generator, dtype=torch.float64)
    return eps.to(device=device, dtype=dtype).expand(b, k, d)


def resolve_num_slots(default: int, num_slots: int | None) -> int:
    """The number of slots for one forward call: the override if given (validated), else default."""
    if num_slots is None:
        return default
    return check_positive_int("num_slots", num_slots)


def check_grouping_inputs(inputs: Tensor, dim: int, mask: Tensor | None) -> None:
    """Validate shapes and dtypes of grouping-module inputs before any work (TypeError for a
    wrong type or dtype, ValueError for a wrong shape).

    inputs (b, n, dim) floating; mask optional (b, n) bool with ≥ 1 real token per row.
    Finiteness is checked by `prepare_grouping_inputs`.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor (b, n, {dim}); got {type(inputs).__name__}")
    if inputs.dim() != 3:
        raise ValueError(
            f"inputs must be 3-D (batch, tokens, {dim}); got shape {tuple(inputs.shape)} "
            f"({inputs.dim()}-D). Flatten a (b, h, w, {dim}) grid with inputs.flatten(1, 2)."
        )
    b, n, d = inputs.shape
    if d != dim:
        raise ValueError(
            f"inputs must have feature size dim={dim} (last axis); got shape {tuple(inputs.shape)}"
        )
    if n < 1 or b < 1:
        raise ValueError(f"inputs need at least one image and one token; got shape {(b, n, d)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor; got dtype {inputs.dtype}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(
                f"mask must be a (b={b}, n={n}) bool tensor (True = real token); "
                f"got {type(mask).__name__}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask must have dtype torch.bool (True = real token); got {mask.dtype}. "
                "Convert with mask.bool()."
            )
        if mask.shape != (b, n):
            raise ValueError(
                f"mask must have shape (b={b}, n={n}) to match inputs; got {tuple(mask.shape)}"
            )
        if not bool(mask.any(-1).all()):
            raise ValueError(
                "mask must keep at least one real token per image; got a row of all False"
            )


def prepare_grouping_inputs(inputs: Tensor, dim: int, mask: Tensor | None) -> Tensor:
    """Validate (see `check_grouping_inputs`), zero masked tokens and check finiteness.

    Returns inputs (b, n, dim) with padded tokens set to 0 (padding may hold garbage, even
    NaN/Inf; only real tokens must be finite). The finiteness check costs one reduction and one
    device sync: a sum is finite iff no element is NaN/Inf, barring overflow of huge finite
    values, which falls back to the exact elementwise test.
    """
    check_grouping_inputs(inputs, dim, mask)
    if mask is not None:
        inputs = inputs.masked_fill(~mask.unsqueeze(-1), 0.0)
    if not bool(torch.isfinite(inputs.sum())) and not bool(torch.isfinite(inputs).all()):
        raise ValueError(
            "inputs must be finite; got NaN or Inf values (check the encoder output or the "
            "learning rate)"
        )
    return inputs


class ResidualMLP(nn.Module):
    """x + MLP(LayerNorm(x)): the slot refinement of slot attention (Locatello et al. 2020).

    (..., d) → (..., d); hidden width `hidden`, ReLU.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(self.norm(x))
