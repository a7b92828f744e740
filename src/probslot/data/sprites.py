"""Procedural multi-object sprites with full ground truth (a Spriteworld-style world, no download).

Each scene holds ``num_objects`` sprites drawn back to front in latent-row order (row 0 is the
farthest), so later rows occlude earlier ones. Rendering is anti-aliased with analytic coverage:
each shape has a signed distance function (SDF) and a pixel's coverage is
``clip(0.5 - sdf_in_pixels, 0, 1)`` (exact for straight edges), optionally averaged over a
``supersample``² sub-pixel grid. Objects are composited with "over":

    w_k = a_k · Π_{j > k} (1 - a_j),   w_bg = Π_j (1 - a_j),   image = w_bg · c_bg + Σ_k w_k · c_k

and the label mask is ``argmax`` over (w_bg, w_1, ..., w_n) — the label follows what is visible
after occlusion; an object that wins no pixel has ``visibility=False``.

Latents per object (row order = depth order; rows beyond ``num_objects`` are zero):

========  ======================================================================================
x, y      centre, as a fraction of the image width / height (0 = left / top edge);
          in ``position_range`` (default [0.15, 0.85])
scale     radius of the disc with the object's area, as a fraction of the image side;
          in ``scale_range`` (default [0.12, 0.22])
rotation  radians, clockwise on screen, in [0, 2π / order) where order is the shape's rotational
          symmetry (square 4, triangle 3, star 5, heart 1); always 0 for circles
hue       HSV hue in [0, 1) (saturation = value = 1); hues of one scene differ by at least
          ``min_hue_distance`` on the colour circle
shape     index into the dataset's ``shapes`` tuple (float-valued, in {0, ..., len(shapes) - 1})
========  ======================================================================================
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from probslot.atomic import atomic_path
from probslot.data.contract import collate, register_dataset
from probslot.registry import did_you_mean
from probslot.validation import check_float, check_int, is_int

__all__ = [
    "BACKGROUNDS",
    "LATENT_NAMES",
    "SHAPES",
    "SpritesDataset",
    "hsv_to_rgb",
    "render_sprites",
]

LATENT_NAMES: tuple[str, ...] = ("x", "y", "scale", "rotation", "hue", "shape")

# Named plain backgrounds (RGB in [0, 1]); "random" draws a dull colour per scene.
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
    "white": (1.0, 1.0, 1.0),
}

Array = np.ndarray


# ---------------------------------------------------------------------------------------------
# Shapes: signed distance functions in the object frame, where every shape has area π
# (the unit disc's), so `scale` means the same amount of paint for every shape.
# ---------------------------------------------------------------------------------------------


def _dihedral_sdf(order: int, ratio: float) -> tuple[Callable[[Array, Array], Array], float]:
    """Exact SDF of a polygon with `order`-fold dihedral symmetry and area π, plus its radius.

    Folding a point's angle into one half-sector [0, π/order] (measured from a vertex) maps it
    into a fundamental domain of the symmetry group; there the boundary is the single segment
    from the vertex A = (R, 0) to B = ratio·R·(cos π/order, sin π/order), and reflections never
    bring the boundary closer, so the distance to that segment is the exact distance. B is the
    edge midpoint for a regular polygon (ratio = cos π/order) and the inner vertex of a star.
    Vertices point up (−y, the top of the image). Area = order·R²·ratio·sin(π/order) = π.
    """
    half = math.pi / order
    radius = math.sqrt(math.pi / (order * ratio * math.sin(half)))
    ax = np.float32(radius)
    bx, by = (
        np.float32(ratio * radius * math.cos(half)),
        np.float32(ratio * radius * math.sin(half)),
    )
    ex, ey = bx - ax, by
    inv_ee = np.float32(1.0 / (ex * ex + ey * ey))
    sector = np.float32(2 * half)

    def sdf(px: Array, py: Array) -> Array:
        r = np.sqrt(px * px + py * py)
        t = np.mod(np.arctan2(px, -py), sector)  # angle from the upward vertex, mod one sector
        t = np.minimum(t, sector - t)  # mirror into [0, π/order]
        qx = r * np.cos(t) - ax  # q - A in the half-sector frame
        qy = r * np.sin(t)
        h = np.minimum(np.maximum((qx * ex + qy * ey) * inv_ee, 0.0), 1.0)
        dx = qx - ex * h
        dy = qy - ey * h
        dist = np.sqrt(dx * dx + dy * dy)
        inside = ex * qy - ey * qx > 0  # origin side of the line AB
        return np.where(inside, -dist, dist)

    return sdf, radius


def _circle_sdf(px: Array, py: Array) -> Array:
    return np.sqrt(px * px + py * py) - 1.0


_HALF_SIDE = math.sqrt(math.pi) / 2  # square of area π


def _box_sdf(px: Array, py: Array, half: float) -> Array:
    qx = np.abs(px) - half
    qy = np.abs(py) - half
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _square_sdf(px: Array, py: Array) -> Array:
    return _box_sdf(px, py, _HALF_SIDE)


# Heart: a diamond (square of side s turned 45°) with two discs of diameter s on its upper
# edges; area s² (1 + π/4) = π. Union SDF = min of the parts (exact outside, where AA happens).
_HEART_S = math.sqrt(math.pi / (1 + math.pi / 4))
# the lobes reach 0.854·s above the diamond's centre, the tip 0.707·s below: shifting the diamond
# down by half the difference centres the heart's bounding box on the origin
_HEART_SHIFT = 0.5 * (_HEART_S / math.sqrt(2) - _HEART_S * (1 / (2 * math.sqrt(2)) + 0.5))
_HEART_LOBE = (_HEART_S / (2 * math.sqrt(2)), -_HEART_S / (2 * math.sqrt(2)) - _HEART_SHIFT)


def _heart_sdf(px: Array, py: Array) -> Array:
    qy = py + _HEART_SHIFT  # centre the bounding box vertically
    r2 = 1 / math.sqrt(2)
    d = _box_sdf((px + qy) * r2, (qy - px) * r2, _HEART_S / 2)
    lx, ly = _HEART_LOBE
    for sx in (-1.0, 1.0):
        cx = px - sx * lx
        cy = py - ly
        d = np.minimum(d, np.sqrt(cx * cx + cy * cy) - _HEART_S / 2)
    return d


_TRIANGLE_SDF, _TRIANGLE_R = _dihedral_sdf(3, math.cos(math.pi / 3))
# inner radius / outer radius = 0.5: a chunky star, readable at 32×32
_STAR_SDF, _STAR_R = _dihedral_sdf(5, 0.5)


class _Shape:
    """A shape: its SDF, circumradius in the object frame, and rotational symmetry order."""

    def __init__(self, sdf: Callable[[Array, Array], Array], radius: float, order: int) -> None:
        self.sdf = sdf
        self.radius = radius
        self.order = order  # 0 = continuous symmetry (circle): rotation latent is always 0

    @property
    def period(self) -> float:
        return 0.0 if self.order == 0 else 2 * math.pi / self.order


def _heart_radius() -> float:
    lobe = math.hypot(_HEART_LOBE[0], _HEART_LOBE[1]) + _HEART_S / 2
    tip = _HEART_S / math.sqrt(2) - _HEART_SHIFT
    return max(lobe, tip)


#: name → shape; the order here is the default `shapes` order (shape latent = index).
SHAPES: dict[str, _Shape] = {
    "circle": _Shape(_circle_sdf, 1.0, 0),
    "square": _Shape(_square_sdf, _HALF_SIDE * math.sqrt(2), 4),
    "triangle": _Shape(_TRIANGLE_SDF, _TRIANGLE_R, 3),
    "star": _Shape(_STAR_SDF, _STAR_R, 5),
    "heart": _Shape(_heart_sdf, _heart_radius(), 1),
}


def hsv_to_rgb(hue: Array, saturation: float = 1.0, value: float = 1.0) -> Array:
    """(n,) hues in [0, 1) → (n, 3) float32 RGB in [0, 1]."""
    h = (np.asarray(hue, dtype=np.float64) % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None]) % 6.0
    rgb = value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _circle_points(rng: np.random.Generator, n: int, gap: float) -> Array:
    """(n,) points on the unit circle [0, 1), pairwise >= gap apart, uniform over all such sets.

    n uniform points on a circle of length 1 - n·gap have Dirichlet(1, ..., 1) spacings; adding
    `gap` to every spacing and rotating uniformly gives the uniform law on the constrained set.
    The points are returned in random order.
    """
    u = np.sort(rng.uniform(0.0, 1.0 - n * gap, size=n))
    points = (u + gap * np.arange(n) + rng.uniform()) % 1.0
    return rng.permutation(points)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _pixel_centres(size: int, supersample: int) -> Array:
    """(size · supersample,) sub-pixel centre coordinates as a fraction of the image side."""
    n = size * supersample
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    coords.setflags(write=False)
    return coords


def _rgb(background: str | Sequence[float]) -> Array:
    if isinstance(background, str):
        return np.asarray(BACKGROUNDS[background], dtype=np.float32)
    return np.asarray(background, dtype=np.float32)


def render_sprites(
    latents: Array,
    image_size: int = 64,
    shapes: Sequence[str] = tuple(SHAPES),
    background: str | Sequence[float] = "black",
    supersample: int = 1,
) -> tuple[Array, Array, Array]:
    """Render one scene from its latents (rows drawn back to front).

    Args:
        latents: (n, 6) float array with columns `LATENT_NAMES` = x, y, scale, rotation, hue,
            shape (index into `shapes`).
        image_size: H = W in pixels.
        shapes: shape names that the shape column indexes.
        background: a name in `BACKGROUNDS` or an RGB triple in [0, 1].
        supersample: sub-pixels per side averaged on top of analytic SDF coverage (1 = none).

    Returns:
        image (3, H, W) float32 in [0, 1], mask (H, W) int64 (0 = background, k = row k - 1),
        visibility (n,) bool (row owns at least one mask pixel).
    """
    lat = np.asarray(latents, dtype=np.float32)
    if lat.ndim != 2 or lat.shape[1] != len(LATENT_NAMES):
        raise ValueError(
            f"latents must be (n, {len(LATENT_NAMES)}) with columns {LATENT_NAMES}; got {lat.shape}"
        )
    n = lat.shape[0]
    if n and not (np.all(lat[:, 5] >= 0) and np.all(lat[:, 5] < len(shapes))):
        raise ValueError(
            f"the shape column must index shapes {tuple(shapes)} (0..{len(shapes) - 1}); "
            f"got {lat[:, 5].tolist()}"
        )
    if n and not np.all(lat[:, 2] > 0):
        raise ValueError(f"the scale column must be > 0; got {lat[:, 2].tolist()}")
    size, ss = int(image_size), int(supersample)
    if size < 1 or ss < 1:
        raise ValueError(
            f"image_size and supersample must be >= 1; got {image_size}, {supersample}"
        )
    coords = _pixel_centres(size, ss)
    colours = hsv_to_rgb(lat[:, 4])  # (n, 3)
    # Composite back to front. Drawing object k scales every earlier weight at a pixel by the
    # same (1 - a_k), so the argmax over earlier layers is unchanged: tracking the running
    # maximum weight `best` and its label gives argmax(w_bg, w_1, ..., w_n) exactly (ties go to
    # the earlier layer, as argmax does) without storing (n + 1, H, W) weights.
    image = np.empty((3, size, size), dtype=np.float32)
    image[:] = _rgb(background)[:, None, None]
    mask = np.zeros((size, size), dtype=np.int64)
    best = np.ones((size, size), dtype=np.float32)
    sub = np.float32(size * ss)
    for k, (x, y, scale, rot, _hue, sid) in enumerate(lat.tolist()):
        shape = SHAPES[shapes[int(sid)]]
        reach = scale * shape.radius * size + 1.0  # pixels, with 1 px for the AA ramp
        x0, x1 = (
            max(int(math.floor(x * size - reach)), 0),
            min(int(math.ceil(x * size + reach)), size),
        )
        y0, y1 = (
            max(int(math.floor(y * size - reach)), 0),
            min(int(math.ceil(y * size + reach)), size),
        )
        if x0 >= x1 or y0 >= y1:
            continue
        inv = 1.0 / scale
        c, s = math.cos(rot) * inv, math.sin(rot) * inv
        u = coords[x0 * ss : x1 * ss] - np.float32(x)  # (w·ss,)
        v = coords[y0 * ss : y1 * ss, None] - np.float32(y)  # (h·ss, 1)
        px = np.float32(c) * u + np.float32(s) * v  # (h·ss, w·ss) object frame, π-area units
        py = np.float32(c) * v - np.float32(s) * u
        dist = shape.sdf(px, py) * (np.float32(scale) * sub)  # sub-pixel units
        alpha = np.minimum(np.maximum(np.float32(0.5) - dist, 0.0), 1.0)
        if ss > 1:
            h, w = y1 - y0, x1 - x0
            alpha = alpha.reshape(h, ss, w, ss).mean(axis=(1, 3))
        keep = 1.0 - alpha
        win = image[:, y0:y1, x0:x1]
        win *= keep
        win += alpha * colours[k][:, None, None]
        b = best[y0:y1, x0:x1]
        b *= keep
        wins = alpha > b
        np.copyto(mask[y0:y1, x0:x1], k + 1, where=wins)
        np.maximum(b, alpha, out=b)
    np.clip(image, 0.0, 1.0, out=image)
    visibility = np.bincount(mask.ravel(), minlength=n + 1)[1:] > 0
    return image, mask, visibility


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def _check_range(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high) of floats; got {value!r}") from None
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must satisfy {low} <= low <= high <= {high}; got ({lo}, {hi})")
    return lo, hi


@register_dataset("sprites")
class SpritesDataset(torch.utils.data.Dataset):
    """Procedural multi-object sprite scenes, deterministic per (seed, index), no storage needed.

    Items follow the image contract (`docs/data.md`): ``image`` (3, H, W) float32 in [0, 1],
    ``mask`` (H, W) int64, ``num_objects`` int, ``latents`` (max_objects, 6) float32 with columns
    `latent_names`, ``visibility`` (max_objects,) bool. See the module docstring for latent
    ranges and the rendering rule.

    Args:
        num_samples: dataset length (any size: item i is rendered from ``default_rng([seed, i])``).
        image_size: H = W in pixels, >= 8 (32 and 16 work; objects stay >= ~4 px across).
        min_objects, max_objects: objects per scene, uniform in [min_objects, max_objects].
        seed: >= 0; different seeds give different scenes.
        shapes: shape names from `SHAPES` (circle, square, triangle, star, heart).
        background: "black" (default), "gray", "white", "random" (a dull colour per scene, a
            second colour that never matches an object's saturated colour) or an RGB triple.
        min_distance: if set, object centres are at least this far apart (fraction of the side).
        scale_range, position_range: ranges of the scale and x, y latents.
        min_hue_distance: hues in one scene differ by at least this on the colour circle, in
            [0, 0.5 / max_objects]; default min(0.1, 0.5 / max_objects).
        supersample: extra sub-pixels per side on top of analytic SDF anti-aliasing (1 = none).
        cache: optional ``.npz`` or ``.h5`` path; rendered once and written atomically, then
            loaded; a cache written with other settings raises ValueError.
    """

    latent_names: tuple[str, ...] = LATENT_NAMES

    def __init__(
        self,
        num_samples: int,
        image_size: int = 64,
        min_objects: int = 1,
        max_objects: int = 4,
        seed: int = 0,
        shapes: Sequence[str] = ("circle", "square", "triangle", "star", "heart"),
        background: Literal["black", "gray", "white", "random"]
        | tuple[float, float, float] = "black",
        min_distance: float | None = None,
        scale_range: tuple[float, float] = (0.12, 0.22),
        position_range: tuple[float, float] = (0.15, 0.85),
        min_hue_distance: float | None = None,
        supersample: int = 1,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, low=0)
        self.image_size = check_int(
            "image_size",
            image_size,
            low=8,
            hint="Sprites need at least 8×8 pixels to be recognisable.",
        )
        self.max_objects = check_int("max_objects", max_objects, low=1, high=255)
        self.min_objects = check_int(
            "min_objects",
            min_objects,
            low=0,
            high=self.max_objects,
            hint=f"min_objects must not exceed max_objects={self.max_objects}.",
        )
        self.seed = check_int("seed", seed, low=0)
        self.supersample = check_int("supersample", supersample, low=1, high=8)
        if isinstance(shapes, str):
            raise TypeError(
                f"shapes must be a sequence of names, e.g. ('circle',); got the string {shapes!r}"
            )
        shapes = tuple(shapes)
        if not shapes:
            raise ValueError(f"shapes must name at least one of {list(SHAPES)}; got ()")
        for name in shapes:
            if name not in SHAPES:
                dym = did_you_mean(str(name), list(SHAPES))
                raise ValueError(
                    f"unknown shape {name!r}.{dym} Allowed shapes: {', '.join(SHAPES)}"
                )
        if len(set(shapes)) != len(shapes):
            raise ValueError(f"shapes must not repeat a name; got {shapes}")
        self.shapes = shapes
        if isinstance(background, str):
            if background not in (*BACKGROUNDS, "random"):
                allowed = [*BACKGROUNDS, "random"]
                dym = did_you_mean(background, allowed)
                raise ValueError(
                    f"unknown background {background!r}.{dym} Allowed: {', '.join(allowed)} or an RGB triple"
                )
            self.background: str | tuple[float, float, float] = background
        else:
            rgb = tuple(float(c) for c in background)
            if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
                raise ValueError(f"background RGB must be 3 floats in [0, 1]; got {background!r}")
            self.background = rgb  # type: ignore[assignment]
        self.scale_range = _check_range("scale_range", scale_range, 0.01, 0.5)
        if self.scale_range[0] * self.image_size < 0.5:
            raise ValueError(
                f"scale_range low {self.scale_range[0]} gives objects under 1 pixel across at "
                f"image_size={self.image_size}; use a low >= {0.5 / self.image_size:.4f}"
            )
        self.position_range = _check_range("position_range", position_range, 0.0, 1.0)
        mhd = (
            min(0.1, 0.5 / self.max_objects)
            if min_hue_distance is None
            else check_float("min_hue_distance", min_hue_distance)
        )
        if not 0.0 <= mhd * self.max_objects <= 0.5:
            raise ValueError(
                f"min_hue_distance must lie in [0, 0.5 / max_objects] = [0, {0.5 / self.max_objects:.4f}] "
                f"so {self.max_objects} hues always fit on the colour circle; got {min_hue_distance}"
            )
        self.min_hue_distance = mhd
        if min_distance is not None:
            md = check_float("min_distance", min_distance)
            side = self.position_range[1] - self.position_range[0]
            # Random sequential placement reliably fills ~half the area with discs of radius md/2.
            limit = (
                math.sqrt(0.45 * (side + md) ** 2 / (math.pi / 4 * self.max_objects))
                if md > 0
                else 1
            )
            if md < 0 or md > min(limit, side * math.sqrt(2)):
                bound = math.sqrt(0.45 / (math.pi / 4 * self.max_objects)) * side
                raise ValueError(
                    f"min_distance must be >= 0 and small enough to place {self.max_objects} objects "
                    f"in position_range {self.position_range} (about <= {bound:.3f}); got {min_distance}"
                )
            self.min_distance: float | None = md
        else:
            self.min_distance = None
        self._periods = np.array([SHAPES[s].period for s in self.shapes], dtype=np.float64)
        self._cache: dict[str, Array] | None = None
        self.cache_path = Path(cache) if cache is not None else None
        if self.cache_path is not None:
            self._cache = self._load_or_write_cache(self.cache_path)

    @property
    def latent_ranges(self) -> dict[str, tuple[float, float]]:
        """Closed bounds of each latent column (rotation: the widest shape period, exclusive)."""
        return {
            "x": self.position_range,
            "y": self.position_range,
            "scale": self.scale_range,
            "rotation": (0.0, float(self._periods.max())),
            "hue": (0.0, 1.0),
            "shape": (0.0, float(len(self.shapes) - 1)),
        }

    # -- sampling ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Every setting that changes the rendered data (used to validate caches)."""
        return {
            "num_samples": self.num_samples,
            "image_size": self.image_size,
            "min_objects": self.min_objects,
            "max_objects": self.max_objects,
            "seed": self.seed,
            "shapes": list(self.shapes),
            "background": self.background
            if isinstance(self.background, str)
            else list(self.background),
            "min_distance": self.min_distance,
            "scale_range": list(self.scale_range),
            "position_range": list(self.position_range),
            "min_hue_distance": self.min_hue_distance,
            "supersample": self.supersample,
        }

    def _spaced_positions(self, rng: np.random.Generator, n: int, gap: float) -> Array:
        """(n, 2) centres in `position_range`, pairwise >= gap apart (sequential rejection)."""
        lo, hi = self.position_range
        out = np.empty((n, 2))
        for i in range(n):
            for _ in range(1000):
                cand = rng.uniform(lo, hi, 2)
                if i == 0 or np.sqrt(((out[:i] - cand) ** 2).sum(1)).min() >= gap:
                    break
            else:
                raise RuntimeError(
                    f"could not place object {i + 1} of {n} at distance >= {gap} after 1000 tries; "
                    "lower min_distance or max_objects"
                )
            out[i] = cand
        return out

    def sample_latents(self, index: int) -> tuple[Array, Array | None]:
        """(num_objects, 6) latents of item `index` (rows in depth order) and its background RGB
        (None for a named plain background)."""
        rng = np.random.default_rng([self.seed, index])
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        lat = np.zeros((n, len(LATENT_NAMES)), dtype=np.float64)
        shape_id = rng.integers(0, len(self.shapes), size=n)
        lat[:, 5] = shape_id
        lat[:, 2] = rng.uniform(*self.scale_range, size=n)
        if self.min_distance is None:
            lat[:, 0:2] = rng.uniform(*self.position_range, size=(n, 2))
        else:
            lat[:, 0:2] = self._spaced_positions(rng, n, self.min_distance)
        lat[:, 3] = rng.uniform(0.0, 1.0, size=n) * self._periods[shape_id]
        lat[:, 4] = _circle_points(rng, n, self.min_hue_distance)
        bg = None
        if self.background == "random":
            # dull (low saturation, mid value) so it never matches an object's saturated colour
            bg = hsv_to_rgb(rng.uniform(0.0, 1.0, size=1), saturation=0.3, value=0.45)[0]
        return lat.astype(np.float32), bg

    def render(self, index: int) -> dict[str, Any]:
        """Render item `index` without the cache (see `__getitem__` for the keys)."""
        lat, bg = self.sample_latents(index)
        background = bg if bg is not None else self.background
        image, mask, vis = render_sprites(
            lat, self.image_size, self.shapes, background, self.supersample
        )
        n = lat.shape[0]
        latents = np.zeros((self.max_objects, len(LATENT_NAMES)), dtype=np.float32)
        latents[:n] = lat
        visibility = np.zeros(self.max_objects, dtype=bool)
        visibility[:n] = vis
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(mask),
            "num_objects": n,
            "latents": torch.from_numpy(latents),
            "visibility": torch.from_numpy(visibility),
        }

    # -- Dataset protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        if not is_int(index):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index must be in [0, {self.num_samples}); got {index}")
        return i

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Item `index`: ``image`` (3, H, W), ``mask`` (H, W), ``num_objects``, ``latents``
        (max_objects, 6), ``visibility`` (max_objects,)."""
        i = self._check_index(index)
        if self._cache is not None:
            c = self._cache
            return {
                "image": torch.from_numpy(c["image"][i].astype(np.float32)),
                "mask": torch.from_numpy(c["mask"][i].astype(np.int64)),
                "num_objects": int(c["num_objects"][i]),
                "latents": torch.from_numpy(c["latents"][i].copy()),
                "visibility": torch.from_numpy(c["visibility"][i].copy()),
            }
        return self.render(i)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Items for a batch of indices (torch's DataLoader calls this once per batch)."""
        return [self[i] for i in indices]

    def render_batch(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """A collated batch: ``image`` (b, 3, H, W), ``mask`` (b, H, W), ``num_objects`` (b,),
        ``latents`` (b, max_objects, 6), ``visibility`` (b, max_objects)."""
        return collate(self.__getitems__(indices))

    # -- cache ---------------------------------------------------------------------------------

    def _load_or_write_cache(self, path: Path) -> dict[str, Array]:
        if path.suffix not in (".npz", ".h5", ".hdf5"):
            raise ValueError(f"cache must end in .npz, .h5 or .hdf5; got {str(path)!r}")
        meta = json.dumps(self.config(), sort_keys=True)
        if path.exists():
            arrays, stored = _read_cache(path)
            if stored != meta:
                raise ValueError(
                    f"cache {str(path)!r} was written with other settings ({stored}); this dataset "
                    f"has {meta}. Delete the file or pass another cache path."
                )
            return arrays
        items = [self.render(i) for i in range(self.num_samples)]
        size, m, f = self.image_size, self.max_objects, len(LATENT_NAMES)
        arrays = {
            "image": np.stack([it["image"].numpy() for it in items])
            if items
            else np.zeros((0, 3, size, size), np.float32),
            "mask": np.stack([it["mask"].numpy().astype(np.uint8) for it in items])
            if items
            else np.zeros((0, size, size), np.uint8),
            "num_objects": np.array([it["num_objects"] for it in items], dtype=np.int64),
            "latents": np.stack([it["latents"].numpy() for it in items])
            if items
            else np.zeros((0, m, f), np.float32),
            "visibility": np.stack([it["visibility"].numpy() for it in items])
            if items
            else np.zeros((0, m), bool),
        }
        _write_cache(path, arrays, meta)
        return arrays


def _write_cache(path: Path, arrays: dict[str, Array], meta: str) -> None:
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, config=np.array(meta), **arrays)
        else:
            import h5py

            with h5py.File(tmp, "w") as fh:
                fh.attrs["config"] = meta
                for key, value in arrays.items():
                    fh.create_dataset(key, data=value, compression="gzip", compression_opts=1)


def _read_cache(path: Path) -> tuple[dict[str, Array], str]:
    keys = ("image", "mask", "num_objects", "latents", "visibility")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in keys}, str(data["config"])
    import h5py

    with h5py.File(path, "r") as fh:
        meta = fh.attrs["config"]
        return {k: fh[k][()] for k in keys}, meta if isinstance(meta, str) else meta.decode()
