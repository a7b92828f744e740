"""Building blocks shared by encoders and decoders: activations, sizes, grids, position embeddings.

One module below `probslot.encoders` and `probslot.decoders` (and above nothing of probslot but
`probslot.validation`), so a decoder never imports the encoder package to get a grid or an
activation. Grouping-specific checks and layers live in `probslot.nn.layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from probslot.validation import check_int, is_int

__all__ = [
    "Activation",
    "SoftPositionEmbed",
    "as_hw",
    "as_int_tuple",
    "build_grid",
    "cell_centres",
    "check_coord_dims",
    "make_activation",
]

Activation = Literal["leaky_relu", "relu"]
_ACTIVATIONS = ("leaky_relu", "relu")


def make_activation(name: str) -> nn.Module:
    """`leaky_relu` (default everywhere: the paper's weak-injectivity argument, Assumption 8) or `relu`."""
    if not isinstance(name, str):
        raise TypeError(
            f"activation must be a name, one of {', '.join(_ACTIVATIONS)}; got {name!r}"
        )
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(
        f"activation must be one of {', '.join(_ACTIVATIONS)}; got {name!r}. "
        "Use 'leaky_relu' (weakly injective, as the paper assumes) or 'relu' (as the authors' code)."
    )


def as_hw(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """`size` as a (height, width) pair of positive ints; an int means a square.

    Raises:
        TypeError: `size` is not an int or a pair of ints.
        ValueError: a side is < 1.
    """
    if is_int(size):
        pair = (int(size), int(size))  # type: ignore[arg-type]
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        if not all(is_int(s) for s in size):
            raise TypeError(f"{name} must hold two ints (height, width); got {size!r}")
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints; got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive; got {size!r}")
    return pair


def as_int_tuple(values: Sequence[int], name: str, length: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of positive ints as a tuple; `length` checks its length.

    Raises:
        TypeError: `values` is not a sequence of ints (a string, a float entry, a bool entry).
        ValueError: it is empty, an entry is < 1, or its length is not `length`.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a non-empty list of positive ints; got {values!r}")
    if len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of positive ints; got {values!r}")
    if not all(is_int(v) for v in values):
        raise TypeError(f"{name} must hold positive ints; got {list(values)!r}")
    if not all(v > 0 for v in values):
        raise ValueError(f"{name} must hold positive ints; got {list(values)!r}")
    if length is not None and len(values) != length:
        raise ValueError(
            f"{name} must have one entry per layer ({length}); got {len(values)}: {list(values)!r}"
        )
    return tuple(int(v) for v in values)


def build_grid(height: int, width: int, device=None, dtype=None) -> Tensor:
    """(h, w, 4) coordinates (y, x, 1 − y, 1 − x) in [0, 1] on a height × width grid."""
    ys = torch.linspace(0.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(0.0, 1.0, width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gy, gx, 1.0 - gy, 1.0 - gx], dim=-1)


def cell_centres(height: int, width: int, device=None, dtype=None) -> Tensor:
    """(h·w, 2) image-plane coordinates (y, x) in [−1, 1] of the centres of an h × w grid of cells.

    The cell centres of any grid laid over the same image agree, whatever its resolution: a token of
    an 12×12 grid and the 2×2 pixels of a 24×24 image it covers share the frame (−1 and 1 are the
    image's edges). Row-major order, as encoders flatten their grids.
    """
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * (2.0 / width) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gy, gx], dim=-1).reshape(height * width, 2)


def check_coord_dims(coord_dims: object, size: int, size_name: str, meaning: str) -> int:
    """`coord_dims` as 0 or 2 (positions in the mixture, see `cell_centres`), smaller than `size`.

    `meaning` says what 2 does in the caller (named in the error), `size_name` what `size` is.
    """
    dims = check_int("coord_dims", coord_dims, hint=f"Use 0 or 2 ({meaning})")
    if dims not in (0, 2):
        raise ValueError(f"coord_dims must be 0 or 2 ({meaning}); got {dims}")
    if size <= dims:
        raise ValueError(
            f"{size_name} must exceed coord_dims={dims} to leave room for features; got {size}"
        )
    return dims


class SoftPositionEmbed(nn.Module):
    """Soft position embedding: Linear(4 → dim) on the grid (y, x, 1 − y, 1 − x), added to features.

    Works on any grid size, so an encoder is not tied to one image size.
    forward(features (b, dim, h, w)) → (b, dim, h, w).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(4, dim)

    def embedding(self, height: int, width: int) -> Tensor:
        """(dim, h, w) the additive position code."""
        grid = build_grid(
            height, width, device=self.proj.weight.device, dtype=self.proj.weight.dtype
        )
        return self.proj(grid).permute(2, 0, 1)

    def forward(self, features: Tensor) -> Tensor:
        return features + self.embedding(features.shape[-2], features.shape[-1])
