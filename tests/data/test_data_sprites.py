"""SpritesDataset: contract, determinism, latent ranges, mask/image agreement, occlusion, cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probslot.data import DATASETS, LATENT_NAMES, SHAPES, SpritesDataset, check_image_item
from probslot.data.sprites import _HEART_S, hsv_to_rgb, render_sprites

KEYS = ("image", "mask", "num_objects", "latents", "visibility")


def _same(a: dict, b: dict) -> bool:
    return all(
        (a[k] == b[k])
        if isinstance(a[k], int)
        else a[k].numpy().tobytes() == b[k].numpy().tobytes()
        for k in KEYS
    )


def test_registered() -> None:
    assert DATASETS.get("sprites") is SpritesDataset
    assert (
        SpritesDataset.latent_names
        == LATENT_NAMES
        == ("x", "y", "scale", "rotation", "hue", "shape")
    )


@pytest.mark.parametrize(("size", "max_objects"), [(8, 2), (16, 3), (32, 5), (64, 7)])
def test_contract_shapes_and_dtypes(size: int, max_objects: int) -> None:
    ds = SpritesDataset(7, image_size=size, max_objects=max_objects, seed=3)
    for i in range(len(ds)):
        item = ds[i]
        assert list(item) == list(KEYS)
        check_image_item(item, max_objects, len(LATENT_NAMES))
        assert item["image"].shape == (3, size, size)
        assert item["latents"].shape == (max_objects, 6)


def test_deterministic_per_seed_and_index() -> None:
    a = SpritesDataset(11, image_size=32, seed=5)
    b = SpritesDataset(11, image_size=32, seed=5)
    # order of access must not matter: index 7 alone equals index 7 after others
    first = b[7]
    for i in range(11):
        assert _same(a[i], b[i])
    assert _same(first, a[7])
    c = SpritesDataset(11, image_size=32, seed=6)
    assert (
        sum(a[i]["image"].numpy().tobytes() != c[i]["image"].numpy().tobytes() for i in range(11))
        == 11
    )
    # different indices give different scenes
    images = {a[i]["image"].numpy().tobytes() for i in range(11)}
    assert len(images) == 11


def test_latents_in_documented_ranges() -> None:
    shapes = ("circle", "square", "triangle", "star", "heart")
    ds = SpritesDataset(
        300,
        image_size=32,
        min_objects=2,
        max_objects=5,
        seed=1,
        scale_range=(0.1, 0.2),
        position_range=(0.2, 0.7),
    )
    counts = []
    for i in range(len(ds)):
        item = ds[i]
        n = item["num_objects"]
        counts.append(n)
        lat = item["latents"].numpy()
        assert np.all(lat[n:] == 0)
        lat = lat[:n]
        x, y, scale, rot, hue, shape = lat.T
        assert np.all((x >= 0.2) & (x <= 0.7) & (y >= 0.2) & (y <= 0.7))
        assert np.all((scale >= 0.1) & (scale <= 0.2))
        assert np.all((hue >= 0) & (hue < 1))
        assert np.all(shape == np.round(shape)) and np.all((shape >= 0) & (shape < len(shapes)))
        for r, s in zip(rot, shape):
            period = SHAPES[shapes[int(s)]].period
            assert 0 <= r < period or (period == 0 and r == 0)
    assert min(counts) == 2 and max(counts) == 5
    # every count appears: uniform over [min_objects, max_objects]
    assert set(counts) == {2, 3, 4, 5}


def test_min_distance_and_hue_gap_hold() -> None:
    ds = SpritesDataset(
        60, image_size=32, min_objects=4, max_objects=4, min_distance=0.25, min_hue_distance=0.12
    )
    for i in range(len(ds)):
        lat = ds[i]["latents"].numpy()
        xy, hue = lat[:, :2], lat[:, 4]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(4) * 9
        assert d.min() >= 0.25 - 1e-6
        dh = np.abs(hue[:, None] - hue[None])
        dh = np.minimum(dh, 1 - dh) + np.eye(4) * 9
        assert dh.min() >= 0.12 - 1e-6


def _interior(mask: np.ndarray, label: int) -> np.ndarray:
    """Pixels whose whole 3×3 neighbourhood carries `label` (away from anti-aliased edges)."""
    pad = np.pad(mask == label, 1, constant_values=False)
    h, w = mask.shape
    ok = np.ones((h, w), bool)
    for dy in range(3):
        for dx in range(3):
            ok &= pad[dy : dy + h, dx : dx + w]
    return ok


@pytest.mark.parametrize("background", ["black", "gray", (0.2, 0.3, 0.9)])
def test_mask_agrees_with_image(background) -> None:
    ds = SpritesDataset(40, image_size=48, max_objects=4, seed=2, background=background)
    bg = np.array(
        [0.5] * 3 if background == "gray" else [0.0] * 3 if background == "black" else background
    )
    stats = [0, 0]  # interior object pixels off their colour, interior object pixels
    bg_stats = [0, 0]  # the same for the background
    err = [0.0, 0]  # summed colour error of labelled object pixels, their count
    for i in range(len(ds)):
        item = ds[i]
        image = item["image"].permute(1, 2, 0).numpy()
        mask = item["mask"].numpy()
        n = item["num_objects"]
        colours = hsv_to_rgb(item["latents"][:n, 4].numpy())
        # background interior pixels have exactly the background colour, except rare pixels
        # grazed by a sub-pixel sliver (a star tip, an occluded fringe) that wins no pixel
        inner_bg = _interior(mask, 0)
        off = np.abs(image[inner_bg] - bg).max(1) > 1e-6
        bg_stats[0] += int(off.sum())
        bg_stats[1] += int(inner_bg.sum())
        # argmax labelling: the label's weight w >= 1 / (n + 1), so a labelled pixel's colour is
        # within 1 - w <= n / (n + 1) of the label's colour in every channel
        bound = n / (n + 1) + 1e-6
        assert np.abs(image[mask == 0] - bg).max(initial=0.0) <= bound
        for k in range(1, n + 1):
            sel = mask == k
            if not sel.any():
                continue
            inner = _interior(mask, k)
            # interior pixels of object k: exactly its colour (up to float rounding and slivers)
            off = np.abs(image[inner] - colours[k - 1]).max(1) > 1e-5
            stats[0] += int(off.sum())
            stats[1] += int(inner.sum())
            assert np.abs(image[sel] - colours[k - 1]).max() <= bound
            # pixels labelled k, edges included, are dominated by k's colour
            err[0] += float(np.abs(image[sel] - colours[k - 1]).max(1).sum())
            err[1] += int(sel.sum())
    assert stats[0] <= 0.002 * stats[1]
    assert bg_stats[0] <= 0.002 * bg_stats[1]
    assert err[0] / err[1] < 0.05


def test_visibility_and_num_objects_agree_with_mask() -> None:
    # crowded scenes so that some objects get fully hidden
    ds = SpritesDataset(
        200, image_size=24, min_objects=5, max_objects=7, scale_range=(0.15, 0.3), seed=4
    )
    hidden = 0
    for i in range(len(ds)):
        item = ds[i]
        n, mask, vis = item["num_objects"], item["mask"].numpy(), item["visibility"].numpy()
        present = np.zeros(7, bool)
        labels = np.unique(mask)
        present[labels[labels > 0] - 1] = True
        np.testing.assert_array_equal(vis, present)
        assert mask.max() <= n and not vis[n:].any()
        hidden += int(n - vis.sum())
    assert hidden > 0, "expected some fully occluded objects in crowded scenes"


def _scene(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def test_occlusion_follows_depth_order() -> None:
    a = (0.40, 0.5, 0.15, 0.0, 0.0, 1)  # red square
    b = (0.60, 0.5, 0.15, 0.0, 0.5, 1)  # cyan square, overlapping a
    _, alone_mask, _ = render_sprites(_scene(a), 40, background="black")
    _, mask_ab, vis_ab = render_sprites(_scene(a, b), 40)  # b drawn over a
    _, mask_ba, _ = render_sprites(_scene(b, a), 40)  # a drawn over b
    area_alone = (alone_mask == 1).sum()
    assert (mask_ab == 1).sum() < area_alone  # a loses its overlapped pixels
    assert (mask_ba == 2).sum() == area_alone  # a in front keeps all of them
    assert vis_ab.tolist() == [True, True]
    # a small object fully behind a large one is invisible; in front it is visible
    small = (0.5, 0.5, 0.05, 0.0, 0.0, 0)
    big = (0.5, 0.5, 0.3, 0.0, 0.6, 1)
    image, mask, vis = render_sprites(_scene(small, big), 40)
    assert vis.tolist() == [False, True] and not (mask == 1).any()
    np.testing.assert_allclose(image[:, 20, 20], hsv_to_rgb(np.array([0.6]))[0], atol=1e-6)
    _, _, vis = render_sprites(_scene(big, small), 40)
    assert vis.tolist() == [True, True]


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("supersample", [1, 3])
def test_coverage_integrates_to_shape_area(shape: str, supersample: int) -> None:
    """Anti-aliased coverage sums to the analytic area π (scale · S)² for every shape and rotation."""
    size, scale = 56, 0.19
    names = tuple(SHAPES)
    for rot in (0.0, 0.3, 1.1):
        lat = _scene((0.47, 0.53, scale, rot, 0.0, names.index(shape)))  # hue 0: pure red
        image, _, _ = render_sprites(lat, size, names, "black", supersample)
        alpha = image[0]
        assert np.allclose(image[1:], 0)
        area = math.pi * (scale * size) ** 2
        assert abs(alpha.sum() - area) / area < 0.01
        # anti-aliasing: there are partially covered edge pixels
        assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 10


def test_rotation_changes_non_circles_only() -> None:
    names = tuple(SHAPES)
    for shape in names:
        a, _, _ = render_sprites(_scene((0.5, 0.5, 0.2, 0.0, 0.3, names.index(shape))), 32, names)
        b, _, _ = render_sprites(_scene((0.5, 0.5, 0.2, 0.4, 0.3, names.index(shape))), 32, names)
        assert np.allclose(a, b, atol=1e-5) == (shape == "circle")


def test_random_background_is_plain_and_distinct() -> None:
    ds = SpritesDataset(6, image_size=32, background="random", seed=9)
    bgs = []
    for i in range(len(ds)):
        item = ds[i]
        image = item["image"].permute(1, 2, 0).numpy()
        inner = _interior(item["mask"].numpy(), 0)
        px = image[inner]
        colour = np.median(px, axis=0)
        # one plain colour per scene (bar pixels grazed by a sub-pixel sliver of an object)
        assert (np.abs(px - colour).max(1) < 1e-6).mean() > 0.99
        # dull: low saturation, so never an object's saturated colour
        assert colour.max() - colour.min() < 0.2
        bgs.append(colour)
    assert len({tuple(np.round(b, 4)) for b in bgs}) == 6


def test_batch_paths_match_items() -> None:
    ds = SpritesDataset(9, image_size=16, max_objects=3, seed=8)
    batch = ds.render_batch([4, 1, 7])
    assert batch["image"].shape == (3, 3, 16, 16) and batch["num_objects"].dtype == torch.int64
    for j, i in enumerate([4, 1, 7]):
        assert torch.equal(batch["image"][j], ds[i]["image"])
        assert torch.equal(batch["mask"][j], ds[i]["mask"])
    assert len(ds.__getitems__([0, 2])) == 2
    with pytest.raises(IndexError, match=r"\[0, 9\)"):
        ds[9]


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_cache_round_trip(tmp_path, suffix: str) -> None:
    path = tmp_path / "sub" / f"sprites{suffix}"
    kwargs = dict(num_samples=5, image_size=16, max_objects=3, seed=2)
    fresh = SpritesDataset(**kwargs)
    written = SpritesDataset(**kwargs, cache=path)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    loaded = SpritesDataset(**kwargs, cache=path)
    for i in range(5):
        assert _same(fresh[i], written[i]) and _same(fresh[i], loaded[i])
    with pytest.raises(ValueError, match="other settings"):
        SpritesDataset(**{**kwargs, "seed": 3}, cache=path)
    with pytest.raises(ValueError, match=r"\.npz, \.h5"):
        SpritesDataset(**kwargs, cache=tmp_path / "x.pkl")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"min_objects": 5, "max_objects": 3},
            r"min_objects must be an integer >= 0 and <= 3; got 5",
        ),
        ({"image_size": 7}, r"image_size must be an integer >= 8; got 7"),
        ({"num_samples": -1}, r"num_samples must be an integer >= 0; got -1"),
        ({"max_objects": 0}, r"max_objects must be an integer >= 1 and <= 255; got 0"),
        ({"min_objects": -2}, r"min_objects must be an integer >= 0 and <= 4; got -2"),
        (
            {"shapes": ("cirle", "square")},
            r"unknown shape 'cirle'\. Did you mean 'circle'\? Allowed shapes: circle",
        ),
        ({"shapes": ()}, r"at least one of"),
        ({"background": "blak"}, r"Did you mean 'black'"),
        ({"background": (1.0, 2.0, 0.0)}, r"3 floats in \[0, 1\]"),
        ({"scale_range": (0.3, 0.1)}, r"0.01 <= low <= high <= 0.5"),
        ({"scale_range": (-0.1, 0.1)}, r"0.01 <= low <= high <= 0.5"),
        ({"position_range": (0.2, 1.3)}, r"0.0 <= low <= high <= 1.0"),
        ({"min_distance": -0.1}, r"min_distance must be >= 0"),
        ({"min_distance": 0.9}, r"min_distance must be >= 0 and small enough"),
        ({"min_hue_distance": 0.2}, r"min_hue_distance must lie in \[0, 0.5 / max_objects\]"),
        ({"image_size": 8, "scale_range": (0.05, 0.1)}, r"under 1 pixel across.*low >= 0\.0625"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpritesDataset(**{"num_samples": 3, **kwargs})


def test_bad_argument_types_raise() -> None:
    with pytest.raises(TypeError, match=r"image_size must be an integer >= 8; got 32\.0 \(float\)"):
        SpritesDataset(3, image_size=32.0)
    with pytest.raises(TypeError, match=r"seed must be an integer >= 0; got True \(bool\)"):
        SpritesDataset(3, seed=True)
    with pytest.raises(TypeError, match=r"min_distance must be a number; got 'far' \(str\)"):
        SpritesDataset(3, min_distance="far")
    with pytest.raises(TypeError, match="sequence of names"):
        SpritesDataset(3, shapes="circle")


def _segment_polygon_sdf(vertices: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Dense reference: distance to the nearest of all edges, sign from matplotlib's inside test."""
    from matplotlib.path import Path as MplPath

    a = vertices
    b = np.roll(vertices, -1, axis=0)
    e = b - a  # (V, 2)
    w = pts[:, None, :] - a[None]  # (P, V, 2)
    t = np.clip((w * e).sum(-1) / (e * e).sum(-1), 0, 1)
    dist = np.linalg.norm(w - t[..., None] * e, axis=-1).min(1)
    inside = MplPath(vertices).contains_points(pts)
    return np.where(inside, -dist, dist)


def _star_vertices(points: int, outer: float, ratio: float) -> np.ndarray:
    ang = -np.pi / 2 + np.pi * np.arange(2 * points) / points  # first vertex points up (−y)
    rad = np.where(np.arange(2 * points) % 2 == 0, outer, outer * ratio)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


@pytest.mark.parametrize(
    ("name", "vertices"),
    [
        ("triangle", lambda r: _star_vertices(3, r, 0.5)[::2]),
        ("star", lambda r: _star_vertices(5, r, 0.5)),
        ("square", lambda r: np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r / np.sqrt(2)),
    ],
)
def test_shape_sdf_matches_dense_polygon_reference(name: str, vertices) -> None:
    shape = SHAPES[name]
    poly = vertices(shape.radius)
    # area-normalised: every shape has the unit disc's area π (shoelace formula)
    x, y = poly[:, 0], poly[:, 1]
    assert abs(0.5 * abs(x @ np.roll(y, -1) - y @ np.roll(x, -1)) - np.pi) < 1e-6
    pts = np.random.default_rng(0).uniform(-2 * shape.radius, 2 * shape.radius, size=(4000, 2))
    got = shape.sdf(pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32))
    np.testing.assert_allclose(got, _segment_polygon_sdf(poly, pts), atol=2e-4)


def test_heart_sdf_sign_and_symmetry() -> None:
    sdf = SHAPES["heart"].sdf
    r = SHAPES["heart"].radius
    pts = np.random.default_rng(1).uniform(-1.2 * r, 1.2 * r, size=(4000, 2)).astype(np.float32)
    d = sdf(pts[:, 0], pts[:, 1])
    np.testing.assert_allclose(d, sdf(-pts[:, 0], pts[:, 1]), atol=1e-6)  # mirror-symmetric in x
    assert np.all(np.linalg.norm(pts[d < 0], axis=1) <= r + 1e-5)  # radius bounds the shape
    assert sdf(np.float32([0.0]), np.float32([0.0]))[0] < 0  # centre inside
    # bounding box centred: the top of the lobes and the bottom tip are equally far from 0
    col = np.linspace(-r, r, 20001, dtype=np.float32)
    for x in (0.0, 0.35 * _HEART_S):
        rows = col[sdf(np.full_like(col, x), col) < 0]
        if x == 0.0:
            tip = rows.max()
        else:
            top = rows.min()
    assert abs(top + tip) < 1e-3
    # two lobes on top (−y) with a cleft between them, one tip at the bottom
    y = np.float32(top + 0.1 * _HEART_S)
    assert sdf(np.float32([0.0]), np.float32([y]))[0] > 0
    assert sdf(np.float32([-0.35 * _HEART_S, 0.35 * _HEART_S]), np.float32([y, y])).max() < 0


def test_hsv_matches_colorsys() -> None:
    import colorsys

    hues = np.linspace(0, 1, 37, endpoint=False)
    ref = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
    np.testing.assert_allclose(hsv_to_rgb(hues), ref, atol=1e-6)
    ref = np.array([colorsys.hsv_to_rgb(h, 0.3, 0.45) for h in hues])
    np.testing.assert_allclose(hsv_to_rgb(hues, 0.3, 0.45), ref, atol=1e-6)


def test_golden_scene_seed0_index0() -> None:
    """Pinned output of the default dataset (guards unnoticed changes to sampling/rendering)."""
    ds = SpritesDataset(3, seed=0)
    item = ds[0]
    assert item["num_objects"] == 4
    expected = [
        [0.66064757, 0.53053749, 0.12165277, 0.22073536, 0.10080185, 3.0],
        [0.80455071, 0.72109747, 0.20132703, 1.80783772, 0.66418129, 2.0],
        [0.15191695, 0.75018299, 0.21127556, 0.85052532, 0.34956416, 1.0],
        [0.17350990, 0.66075879, 0.18066357, 0.47078633, 0.82175946, 1.0],
    ]
    np.testing.assert_allclose(item["latents"].numpy(), expected, atol=1e-6)
    assert torch.bincount(item["mask"].flatten()).tolist() == [2874, 124, 493, 201, 404]
    assert ds.latent_ranges["rotation"] == (0.0, 2 * math.pi)  # the heart's full turn


def test_render_sprites_validates_latents() -> None:
    with pytest.raises(ValueError, match=r"latents must be \(n, 6\)"):
        render_sprites(np.zeros((2, 5)), 16)
    with pytest.raises(ValueError, match=r"shape column must index shapes \('circle',\)"):
        render_sprites(_scene((0.5, 0.5, 0.2, 0.0, 0.0, 1)), 16, shapes=("circle",))
    with pytest.raises(ValueError, match="scale column must be > 0"):
        render_sprites(_scene((0.5, 0.5, 0.0, 0.0, 0.0, 0)), 16)
    image, mask, vis = render_sprites(np.zeros((0, 6)), 16, background="white")
    assert np.all(image == 1) and not mask.any() and vis.shape == (0,)
