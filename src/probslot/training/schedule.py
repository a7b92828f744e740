"""Learning-rate schedules: linear warm-up, then constant or half-cosine decay (notes §7)."""

from __future__ import annotations

import math

__all__ = ["lr_at", "lr_factor"]


def lr_at(
    step: int, *, lr: float, warmup_steps: int, max_steps: int, cosine: bool, min_lr: float
) -> float:
    """Learning rate used for optimiser step `step` (0-based).

    Warm-up: ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (never exactly 0, so
    the first update already moves). After warm-up the rate stays at ``lr`` or, with `cosine`,
    follows ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup_steps) / (max_steps - warmup_steps)`` clamped to [0, 1].
    """
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if not cosine:
        return lr
    span = max(1, max_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor(
    step: int, *, lr: float, warmup_steps: int, max_steps: int, cosine: bool, min_lr: float
) -> float:
    """``lr_at(...) / lr``: the multiplier for ``torch.optim.lr_scheduler.LambdaLR``."""
    return (
        lr_at(
            step,
            lr=lr,
            warmup_steps=warmup_steps,
            max_steps=max_steps,
            cosine=cosine,
            min_lr=min_lr,
        )
        / lr
    )
