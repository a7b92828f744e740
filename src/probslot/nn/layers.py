"""Small layers and input checks shared by the grouping modules.

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "ResidualMLP",
    "check_grouping_inputs",
    "check_iteration",
    "check_positive_int",
    "check_float",
    "override_attributes",
    "prepare_grouping_inputs",
    "resolve_num_slots",
]


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return `value` as an int if it is an int ≥ `minimum`, else raise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{name} must be an integer >= {minimum}; got {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_float(
    name: str,
    value: object,
    what: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Return `value` as a float if it is a real number (not a bool) in the range, else raise a
    ValueError ``"{name} must be {what}; got {value!r}"``. The range is [low, high], with
    `low` excluded when `low_open`; None leaves that side open."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_iteration(name: str, value: object, iters: int) -> int:
    """`value` as an EM iteration number in [1, iters], else a ValueError naming `name`."""
    it = check_positive_int(name, value)
    if it > iters:
        raise ValueError(f"{name} must be an iteration in [1, iters={iters}]; got {value}")
    return it


@contextmanager
def override_attributes(obj: object, **values: object) -> Iterator[None]:
    """Set attributes of `obj` (e.g. a grouping's ``prune_tau``) for the ``with`` block only; the
    previous values come back afterwards, also when the block raises."""
    previous = {name: getattr(obj, name) for name in values}
    try:
        for name, value in values.items():
            setattr(obj, name, value)
        yield
    finally:
        for name, value in previous.items():
            setattr(obj, name, value)


def resolve_num_slots(default: int, num_slots: int | None) -> int:
    """The number of slots for one forward call: the override if given (validated), else default."""
    if num_slots is None:
        return default
    return check_positive_int("num_slots", num_slots)


def check_grouping_inputs(inputs: Tensor, dim: int, mask: Tensor | None) -> None:
    """Validate shapes and dtypes of grouping-module inputs before any work (ValueError/TypeError).

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
        raise ValueError(f"inputs must be a floating-point tensor; got dtype {inputs.dtype}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise ValueError(
                f"mask must be a (b={b}, n={n}) bool tensor (True = real token); "
                f"got {type(mask).__name__}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(
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
