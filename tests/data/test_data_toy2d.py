"""Toy2DDataset: the paper's 3-of-5 Gaussian modes (paper-notes §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probslot.data import DATASETS, TOY2D_CENTRES, Toy2DDataset


def test_registered_and_centres() -> None:
    assert DATASETS.get("toy2d") is Toy2DDataset
    expected = [[0, 0], [10, 10], [-10, -10], [-10, 10], [10, -10]]
    np.testing.assert_array_equal(TOY2D_CENTRES, expected)


@pytest.mark.parametrize(
    ("split", "ppi", "counts"), [("per_mode", 11, [11, 11, 11]), ("total", 128, [42, 42, 44])]
)
def test_items_come_from_exactly_three_modes(split: str, ppi: int, counts: list[int]) -> None:
    ds = Toy2DDataset(num_samples=50, points_per_item=ppi, split=split, seed=3)
    assert ds.num_points == sum(counts)
    for i in range(len(ds)):
        item = ds[i]
        pts, labels, modes = item["points"], item["labels"], item["modes"]
        assert pts.shape == (sum(counts), 2) and pts.dtype == torch.float32
        assert labels.shape == (sum(counts),) and labels.dtype == torch.int64
        assert modes.shape == (3,) and len(set(modes.tolist())) == 3
        assert item["num_objects"] == 3
        # exactly the 3 chosen modes, with the documented counts
        assert set(labels.tolist()) == set(modes.tolist())
        assert sorted(torch.bincount(labels, minlength=5)[modes].tolist()) == sorted(counts)
        # each point is nearest to its own mode's centre (modes are 10 apart, std 0.71)
        d = torch.cdist(pts.double(), torch.from_numpy(TOY2D_CENTRES))
        assert torch.equal(d.argmin(1), labels)


def test_sample_means_and_covariance_match_modes() -> None:
    ds = Toy2DDataset(num_samples=300, points_per_item=64, seed=0)
    pts = torch.cat([ds[i]["points"] for i in range(len(ds))]).double().numpy()
    labels = torch.cat([ds[i]["labels"] for i in range(len(ds))]).numpy()
    for m in range(5):
        sel = pts[labels == m]
        assert len(sel) > 5000
        # standard error of the mean is sqrt(0.5 / len) < 0.01
        np.testing.assert_allclose(sel.mean(0), TOY2D_CENTRES[m], atol=0.05)
        np.testing.assert_allclose(np.cov(sel.T), 0.5 * np.eye(2), atol=0.05)
    # modes are chosen uniformly: each in 3/5 of the items
    chosen = np.stack([ds[i]["modes"].numpy() for i in range(len(ds))])
    freq = np.bincount(chosen.ravel(), minlength=5) / len(ds)
    np.testing.assert_allclose(freq, 0.6, atol=0.1)


def test_standardize_per_item() -> None:
    raw = Toy2DDataset(num_samples=5, points_per_item=40, seed=2)
    std = Toy2DDataset(num_samples=5, points_per_item=40, seed=2, standardize=True)
    for i in range(5):
        p = std[i]["points"].double()
        torch.testing.assert_close(p.mean(0), torch.zeros(2, dtype=torch.double), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            p.std(0, unbiased=False), torch.ones(2, dtype=torch.double), atol=1e-5, rtol=0
        )
        r = raw[i]["points"].double()
        torch.testing.assert_close(p, (r - r.mean(0)) / r.std(0, unbiased=False), atol=1e-5, rtol=0)
        assert torch.equal(std[i]["labels"], raw[i]["labels"])


def test_deterministic_per_seed_and_index() -> None:
    a, b, c = (Toy2DDataset(num_samples=7, seed=s) for s in (4, 4, 5))
    _ = b[6]
    for i in range(7):
        assert a[i]["points"].numpy().tobytes() == b[i]["points"].numpy().tobytes()
        assert torch.equal(a[i]["labels"], b[i]["labels"])
        assert a[i]["points"].numpy().tobytes() != c[i]["points"].numpy().tobytes()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": -3}, r"num_samples must be an integer >= 0; got -3"),
        ({"points_per_item": 2}, r"points_per_item must be an integer >= 3; got 2"),
        ({"seed": -1}, r"seed must be an integer >= 0; got -1"),
        ({"split": "per-mode"}, r"split must be 'per_mode'.*'total'.*got 'per-mode'"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Toy2DDataset(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 7.0}, r"num_samples must be an integer >= 0; got 7\.0 \(float\)"),
        ({"points_per_item": "128"}, r"points_per_item must be an integer >= 3; got '128' \(str\)"),
        ({"seed": False}, r"seed must be an integer >= 0; got False \(bool\)"),
        ({"standardize": 1}, r"standardize must be True or False; got 1 \(int\)"),
    ],
)
def test_bad_argument_types(kwargs: dict, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Toy2DDataset(**kwargs)
