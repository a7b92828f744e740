"""Shared decoder machinery: input checks, packing of kept slots, gated alpha compositing,
upsampling conv stacks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probslot.layers import as_hw, make_activation
from probslot.validation import check_positive_int

__all__ = [
    "check_gates",
    "check_keep",
    "check_odd",
    "check_slots",
    "check_transformer",
    "gated_softmax",
    "num_upsamplings",
    "pack_kept",
    "unpack_kept",
    "upsampling_stack",
]


def check_odd(value: object, name: str) -> int:
    """`value` as an odd positive int (TypeError for a non-int, ValueError for an even one)."""
    value = check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd so convolutions keep the grid size; got {value}")
    return value


def check_transformer(dim: int, depth: int, heads: int, mlp_ratio: int) -> None:
    """Validate a transformer stack's sizes: positive ints, and `dim` divisible by `heads`."""
    for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio)):
        check_positive_int(name, value)
    if dim % heads:
        raise ValueError(
            f"dim ({dim}) must be divisible by heads ({heads}); got remainder {dim % heads}"
        )


def check_slots(slots: Tensor, keep: Tensor | None, slot_dim: int) -> None:
    """Validate decoder inputs: slots (b, k, slot_dim) float; keep None or (b, k) bool, ≥ 1 per image."""
    if not isinstance(slots, Tensor):
        raise TypeError(
            f"slots must be a tensor (batch, slots, {slot_dim}); got {type(slots).__name__}"
        )
    if slots.ndim != 3 or slots.shape[-1] != slot_dim:
        raise ValueError(f"slots must be (batch, slots, {slot_dim}); got {tuple(slots.shape)}")
    check_keep(keep, slots.shape[0], slots.shape[1])


def check_keep(keep: Tensor | None, batch: int, num_slots: int) -> None:
    """Validate a slot-keep mask: None or a (batch, num_slots) bool tensor keeping ≥ 1 slot per image."""
    if keep is None:
        return
    if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
        got = keep.dtype if isinstance(keep, Tensor) else type(keep).__name__
        raise TypeError(f"keep must be a bool tensor of shape (batch, slots); got {got}")
    if tuple(keep.shape) != (batch, num_slots):
        raise ValueError(
            f"keep must have shape (batch, slots) = {(batch, num_slots)} to match the slots; "
            f"got {tuple(keep.shape)}"
        )
    empty = ~keep.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(
            f"keep must keep at least one slot per image; images {rows} keep none "
            "(lower the relevance threshold tau or always keep the slot with the largest pi)"
        )


def check_gates(gates: Tensor | None, batch: int, num_slots: int) -> None:
    """Validate keep gates: None or a (batch, num_slots) float tensor ≥ 0 with a positive gate in
    every image (an image whose slots are all gated off has nothing to draw)."""
    if gates is None:
        return
    if not isinstance(gates, Tensor) or not gates.is_floating_point():
        got = gates.dtype if isinstance(gates, Tensor) else type(gates).__name__
        raise TypeError(
            f"gates must be a float tensor of shape (batch, slots) with values >= 0; got {got}"
        )
    if tuple(gates.shape) != (batch, num_slots):
        raise ValueError(
            f"gates must have shape (batch, slots) = {(batch, num_slots)} to match the slots; "
            f"got {tuple(gates.shape)}"
        )
    g = gates.detach()
    if bool((~(g >= 0).all(1) | ~(g > 0).any(1)).any()):  # NaN fails g >= 0 too
        rows = (~(g >= 0).all(1) | ~(g > 0).any(1)).nonzero().flatten().tolist()
        raise ValueError(
            f"gates must be >= 0 with at least one positive gate per image; images {rows} "
            "break this (a KeepGate always keeps each image's most probable slot)"
        )


def gated_softmax(logits: Tensor, gates: Tensor | None) -> Tensor:
    """Alpha masks over slots (dim 1) weighted by keep gates (AdaSlot, Fan et al. 2024):
    m_k = g_k e^{α_k} / Σ_j g_j e^{α_j}.

    logits (b, k, ...) alpha logits (−inf for skipped slots), gates (b, k) ≥ 0 or None (plain
    softmax) → masks of the shape of `logits`. The value is softmax(α + log g): bit for bit the
    plain softmax when every g = 1, exactly 0 where g = 0 (so hard gates equal decoding only the
    kept slots). The gradient is the quotient's, which stays finite at g = 0 — log g's would be
    infinite there — so a straight-through gate of value 0 still learns what its slot would add.
    """
    masks = torch.softmax(logits if gates is None else logits + _expand(gates, logits).log(), 1)
    if gates is None or not gates.requires_grad:  # log g is a constant: its softmax is exact
        return masks
    g = _expand(gates, logits)
    shift = logits.amax(1, keepdim=True).detach()  # e^{α − max} ≤ 1: no overflow
    weighted = g * torch.exp(logits - shift)
    total = weighted.sum(1, keepdim=True).clamp_min(torch.finfo(weighted.dtype).tiny)
    smooth = weighted / total
    return masks.detach() + (smooth - smooth.detach())  # value: masks; gradient: the quotient's


def _expand(gates: Tensor, like: Tensor) -> Tensor:
    """(b, k) gates → (b, k, 1, ...) in the dtype of `like`, to broadcast over its other axes."""
    return gates.to(like.dtype).reshape(*gates.shape, *([1] * (like.ndim - gates.ndim)))


def pack_kept(slots: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Gather kept slots into one packed batch: (b, k, d) → (m, d) and their flat index (m,) or None."""
    b, k, d = slots.shape
    flat = slots.reshape(b * k, d)  # (b·k, d), slot-major within each image
    if keep is None:
        return flat, None
    index = keep.reshape(b * k).nonzero().flatten()  # (m,)
    return flat.index_select(0, index), index


def unpack_kept(values: Tensor, index: Tensor | None, b: int, k: int, fill: float) -> Tensor:
    """Scatter packed per-slot values (m, ...) back to (b, k, ...); skipped slots hold `fill`."""
    if index is None:
        return values.reshape(b, k, *values.shape[1:])
    full = values.new_full((b * k, *values.shape[1:]), fill)
    full = full.index_copy(0, index, values)  # out of place: differentiable in `values`
    return full.reshape(b, k, *values.shape[1:])


def num_upsamplings(image_size: tuple[int, int], init_size: int | Sequence[int]) -> int:
    """How many ×2 upsamplings take `init_size` to `image_size`; errors if that is not a power of 2."""
    h0, w0 = as_hw(init_size, "init_size")
    h, w = image_size
    ok = h % h0 == 0 and w % w0 == 0 and h // h0 == w // w0
    ratio = h // h0 if ok else 0
    if not ok or ratio & (ratio - 1) != 0:
        raise ValueError(
            f"image_size {image_size} must be init_size {(h0, w0)} times the same power of 2 on "
            f"both axes; choose init_size = image_size / 2^u (e.g. {(max(1, h // 4), max(1, w // 4))})"
        )
    return int(math.log2(ratio))


def upsampling_stack(
    in_channels: int,
    channels: Sequence[int],
    kernel_size: int,
    num_up: int,
    activation: str,
) -> nn.Sequential:
    """Blocks conv k×k → act [→ ×2 nearest upsample for the first `num_up` blocks], one per channel.

    Convolving before upsampling (the authors' ``dec_arch "8b1u2,16b1u2,32b1"``) runs one conv per
    resolution, so only the last block works at full image size: the cheap order for CPU runs.
    At least one block must remain after the last upsampling, so the output is not blocky.
    """
    if num_up > len(channels) - 1:
        raise ValueError(
            f"reaching the image size needs {num_up} ×2 upsamplings plus one block at full "
            f"resolution, i.e. at least {num_up + 1} blocks; got {len(channels)} "
            f"(channels={list(channels)}). Add blocks or raise init_size"
        )
    layers: list[nn.Module] = []
    width = in_channels
    for i, ch in enumerate(channels):
        layers += [
            nn.Conv2d(width, ch, kernel_size, padding=kernel_size // 2),
            make_activation(activation),
        ]
        if i < num_up:
            layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
        width = ch
    return nn.Sequential(*layers)
