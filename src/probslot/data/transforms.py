"""Named crops and the one resize used by conversion and loading (images bilinear, masks nearest).

`CROPS` holds the standard crops of the object-centric literature, each defined on the frame it
is applied to (rows ``top:bottom``, columns ``left:right``, zero-based, end excluded):

================  ==========================================================================
crop              definition
================  ==========================================================================
none              the whole frame
slot-attention    CLEVR (with masks), 240×320 frames only: rows 29:221, columns 64:256
                  (192×192), as IODINE and Slot Attention, then resized (to 128 in their papers)
center            the largest centred square: side min(H, W), top (H − side) // 2,
                  left (W − side) // 2 (CLEVR v1.0 320×480: rows 0:320, columns 80:400)
center-32         a centred 32×32 square, top = round((H − 32) / 2) as torchvision's
                  ``center_crop`` (object-centric-library's Tetrominoes): 35×35 → rows 2:34,
                  columns 2:34
clevrtex          the CLEVRTex benchmark crop: a centred square of side int(0.8 · min(H, W)),
                  box ((W − s) // 2, (H − s) // 2, (W + s) // 2, (H + s) // 2) as the official
                  evaluator: 240×320 → rows 24:216, columns 64:256, then resized to 128
================  ==========================================================================

`resize_images` is bilinear with antialiasing on uint8 (``torch.nn.functional.interpolate(...,
antialias=True)``, PIL's filter), rounded to uint8; `resize_masks` takes, for output pixel i, the input pixel
``floor((i + 0.5) · in / out)`` (nearest, as PIL), so labels are never mixed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probslot.validation import check_choice

__all__ = ["CROPS", "crop_box", "resize_images", "resize_masks"]

Box = tuple[int, int, int, int]  # top, bottom, left, right


def _none(h: int, w: int) -> Box:
    return 0, h, 0, w


def _slot_attention(h: int, w: int) -> Box:
    if (h, w) != (240, 320):
        raise ValueError(
            f"crop 'slot-attention' (rows 29:221, columns 64:256) is defined on CLEVR's 240×320 "
            f"frames; got {h}×{w}. Use crop 'center' for other frames"
        )
    return 29, 221, 64, 256


def _center(h: int, w: int) -> Box:
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return top, top + side, left, left + side


def _center_32(h: int, w: int) -> Box:
    if h < 32 or w < 32:
        raise ValueError(f"crop 'center-32' needs frames of at least 32×32; got {h}×{w}")
    top, left = int(round((h - 32) / 2.0)), int(round((w - 32) / 2.0))
    return top, top + 32, left, left + 32


def _clevrtex(h: int, w: int) -> Box:
    side = int(0.8 * float(min(h, w)))
    return (h - side) // 2, (h + side) // 2, (w - side) // 2, (w + side) // 2


#: crop name → box function of the frame's (H, W)
CROPS: dict[str, Callable[[int, int], Box]] = {
    "none": _none,
    "slot-attention": _slot_attention,
    "center": _center,
    "center-32": _center_32,
    "clevrtex": _clevrtex,
}


def crop_box(name: str, h: int, w: int) -> Box:
    """(top, bottom, left, right) of crop `name` on an H×W frame (see the module table)."""
    check_choice("crop", name, list(CROPS))
    return CROPS[name](h, w)


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (b, 3, H, W) → uint8 (b, 3, *size): bilinear with antialiasing, rounded.

    Runs torch's uint8 channels-last kernel (the one torchvision's resize uses; about 10× the
    float path on a CPU), so a store resized at conversion holds exactly the bytes that resizing
    at load time gives.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"resize_images takes uint8 images; got {images.dtype}")
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    images = images.contiguous(memory_format=torch.channels_last)
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(b, H, W) label maps → (b, *size), nearest (labels are never mixed)."""
    h, w = masks.shape[-2:]
    if (h, w) == tuple(size):
        return masks
    rows, cols = _nearest_index(h, size[0]), _nearest_index(w, size[1])
    return masks[..., rows[:, None], cols[None, :]]
