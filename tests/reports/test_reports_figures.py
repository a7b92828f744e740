"""Figures that explain: titles and labels read back from the matplotlib objects, colours that
follow the ground truth, axes that stay readable."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from probslot.reports.figures import (
    BACKGROUND_COLOUR,
    UNMATCHED_COLOUR,
    make_reconstruction_figure,
    make_slots_figure,
    make_training_panel,
    match_slot_colours,
    object_colour,
    plot_heatmaps,
    plot_training_curves,
    slot_colour,
    wall_clock_minutes,
)

H, W = 12, 10  # pairwise-distinct sizes


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with two objects and soft masks of 4 slots: slot 2 ≈ object 1, slot 0 ≈ object 2,
    slot 3 ≈ the background, slot 1 a sliver of the background."""
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[1:5, 1:5] = 1
    labels[6:11, 5:9] = 2
    owner = torch.full((H, W), 3)
    owner[labels == 1] = 2
    owner[labels == 2] = 0
    owner[0, :] = 1
    masks = torch.nn.functional.one_hot(owner, 4).permute(2, 0, 1).double() * 0.9 + 0.025
    return labels, masks


def test_objects_get_the_colour_of_their_best_iou_slot_and_background_is_marked() -> None:
    labels, masks = _scene()
    m = match_slot_colours(labels, masks)
    assert m.assignment.tolist() == [2, -1, 1, 0]
    assert m.background_slot == 3
    np.testing.assert_allclose(m.colours[2], object_colour(1))
    np.testing.assert_allclose(m.colours[0], object_colour(2))
    np.testing.assert_allclose(m.colours[3], BACKGROUND_COLOUR)
    np.testing.assert_allclose(m.colours[1], UNMATCHED_COLOUR)
    assert m.slot_names() == ["obj 2", "–", "obj 1", "bg"]
    # each object's slot is the one with the highest IoU with it
    for j in (1, 2):
        obj = (labels == j).double().flatten()
        soft = masks.flatten(1)
        iou = (soft @ obj) / (obj.sum() + soft.sum(1) - soft @ obj)
        assert m.assignment[int(iou.argmax())] == j


def test_matching_maximises_the_total_iou_like_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        labels = torch.randint(0, 4, (H, W), generator=g)
        masks = torch.softmax(3 * torch.randn(5, H, W, generator=g, dtype=torch.float64), 0)
        m = match_slot_colours(labels, masks)
        objects = [int(j) for j in labels.unique() if j > 0]
        soft = masks.flatten(1).numpy()

        def iou(j: int, s: int, labels=labels, soft=soft) -> float:
            region = (labels.flatten() == j).double().numpy()
            inter = soft[s] @ region
            return inter / (region.sum() + soft[s].sum() - inter)

        best = max(
            sum(iou(j, s) for j, s in zip(objects, slots, strict=True))
            for slots in itertools.permutations(range(5), len(objects))
        )
        got = sum(iou(int(j), s) for s, j in enumerate(m.assignment) if j > 0)
        assert got == pytest.approx(best)
        assert sorted(int(j) for j in m.assignment if j > 0) == objects


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"labels must be \(H, W\) and masks \(k, H, W\)"):
        match_slot_colours(torch.zeros(H, W, dtype=torch.long), torch.zeros(3, W, H))


def _panels(n: int = 3, k: int = 4) -> dict[str, torch.Tensor]:
    labels, masks = _scene()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, H, W, generator=g)
    pi = torch.softmax(torch.randn(n + 2, k, generator=g), -1)  # the panel images come first
    return {
        "images": images,
        "recon": images.flip(-1),
        "labels": labels.expand(n, H, W).clone(),
        "masks_decoder": masks.float().expand(n, k, H, W).clone(),
        "masks_attention": masks.float().roll(1, 0).expand(n, k, H, W).clone(),
        "per_slot": torch.rand(n, k, 3, H, W, generator=g),
        "alpha": masks.float()[None, :, None].expand(n, k, 1, H, W).clone(),
        "pi": pi,
    }


def _row_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_subplotspec().colspan.start == 0]


def _row(fig, r: int) -> list:
    return [ax for ax in fig.axes if ax.get_subplotspec().rowspan.start == r]


def test_reconstruction_figure_labels_fg_ari_and_pi() -> None:
    from sklearn.metrics import adjusted_rand_score

    panels = _panels()
    fig = make_reconstruction_figure(panels)
    assert "matched to the ground-truth objects" in fig.get_suptitle()
    assert _row_labels(fig) == [
        "input",
        "reconstruction",
        "ground truth",
        "decoder masks",
        "attention masks",
        "π per slot",
    ]
    labels = panels["labels"][0].flatten().numpy()
    for r, key in ((3, "masks_decoder"), (4, "masks_attention")):
        pred = panels[key][0].argmax(0).flatten().numpy()
        fg = labels > 0
        want = adjusted_rand_score(labels[fg], pred[fg])
        assert [ax.get_title() for ax in _row(fig, r)] == [f"FG-ARI {want:.2f}"] * 3
    # π bars: heights are the image's π, coloured like the matched slots, "bg" marked
    bars = _row(fig, 5)[1]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, panels["pi"][1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(bars.patches[2].get_facecolor()[:3], object_colour(1))
    assert [t.get_text() for t in bars.get_xticklabels()] == ["obj 2", "–", "obj 1", "bg"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("background slot" in t for t in legend) and any("unmatched" in t for t in legend)


def test_mask_overlay_uses_the_matched_colours() -> None:
    panels = _panels(n=1)
    fig = make_reconstruction_figure(panels)
    overlay = _row(fig, 3)[0].get_images()[0].get_array()  # (4H, 4W, 3)
    y, x = 4 * 2 + 1, 4 * 2 + 1  # inside object 1 (rows 1-4, cols 1-4), not on a boundary
    rgb = np.asarray(overlay[y, x], dtype=float)
    colour = object_colour(1)
    # the slot's colour, scaled by the input's brightness: the same hue
    np.testing.assert_allclose(rgb / rgb.max(), colour / colour.max(), atol=1e-6)


def test_slots_figure_titles_each_slot_with_pi_and_match() -> None:
    panels = _panels()
    fig = make_slots_figure(panels)
    assert _row_labels(fig) == ["input", "slot 1", "slot 2", "slot 3", "slot 4"]
    pi = panels["pi"]
    want = ["obj 2", "–", "obj 1", "bg"]
    for j in range(4):
        titles = [ax.get_title() for ax in _row(fig, j + 1)]
        assert titles == [f"π {float(pi[i, j]):.2f} · {want[j]}" for i in range(3)]
    frame = _row(fig, 3)[0].spines["top"].get_edgecolor()[:3]
    np.testing.assert_allclose(frame, object_colour(1))


def test_training_panel_has_step_rows_and_pi() -> None:
    b, k = 2, 3
    g = torch.Generator().manual_seed(1)
    images = torch.rand(b, 3, H, W, generator=g)
    masks = torch.softmax(torch.randn(b, k, H, W, generator=g), 1)
    pi = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    fig = make_training_panel(
        images, images, masks, torch.rand(b, k, 3, H, W, generator=g), pi, step=1234
    )
    assert fig.get_suptitle().startswith("step 1234 · 2 validation images")
    assert _row_labels(fig) == [
        "input",
        "reconstruction",
        "masks (argmax)",
        "slot 1",
        "slot 2",
        "slot 3",
    ]
    assert [ax.get_title() for ax in _row(fig, 0)] == ["image 1", "image 2"]
    assert [ax.get_title() for ax in _row(fig, 4)] == ["π 0.30", "π 0.60"]
    label = _row(fig, 4)[0].yaxis.label
    np.testing.assert_allclose(label.get_color(), slot_colour(1))  # slot 2 in its mask colour
    # gaps between the cells
    assert fig.subplotpars.wspace > 0 and fig.subplotpars.hspace > 0


def test_training_panel_file_from_a_model(report_runs) -> None:
    from PIL import Image

    path = report_runs["full"] / "panels" / "step_0000007.png"
    assert path.is_file() and Image.open(path).size[0] > 200


def test_wall_clock_chains_sessions_and_interpolates() -> None:
    series = {
        "val/minutes": [(10, 1.0), (20, 2.0), (30, 0.5), (40, 1.5)],  # resumed after step 20
        "train/loss": [(5, 1.0)],
    }
    to_minutes = wall_clock_minutes(series)
    np.testing.assert_allclose(to_minutes([10, 15, 20, 30, 40]), [1.0, 1.5, 2.0, 2.5, 3.5])
    rate = 3.5 / 40
    np.testing.assert_allclose(to_minutes([5, 50]), [5 * rate, 3.5 + 10 * rate])
    assert wall_clock_minutes({"train/loss": [(1, 1.0)]}) is None


def test_training_curves_against_steps_and_minutes() -> None:
    series = {
        "train/loss": [(s, 1.0 / (s + 1)) for s in range(0, 40, 5)],
        "val/fg_ari": [(10, 0.2), (40, 0.5)],
        "val/minutes": [(10, 1.0), (40, 4.0)],
    }
    by_step = plot_training_curves(series, "t")
    by_time = plot_training_curves(series, "t", x="minutes")
    loss = next(ax for ax in by_time.axes if ax.get_title() == "training loss")
    assert loss.get_xlabel() == "wall-clock minutes" and loss.get_ylabel() == "loss"
    np.testing.assert_allclose(loss.lines[0].get_xdata(), np.arange(0, 40, 5) / 10)
    assert {ax.get_xlabel() for ax in by_step.axes if ax.get_title()} == {"optimiser step"}
    assert {ax.get_title() for ax in by_step.axes} >= {"training loss", "FG-ARI"}
    with pytest.raises(ValueError, match="no val/minutes"):
        plot_training_curves({"train/loss": [(1, 1.0)]}, "t", x="minutes")


def test_heatmap_titles_and_large_values() -> None:
    fig = plot_heatmaps(
        {"posterior_kl": [[0.0, 1.4e14], [1.4e14, 0.0]]},
        ["a", "b"],
        "agreement",
        titles={"posterior_kl": "posterior KL"},
    )
    ax = fig.axes[0]
    assert ax.get_title() == "posterior KL" and fig.get_suptitle() == "agreement"
    assert "1.4e+14" in [t.get_text() for t in ax.texts]


# --------------------------------------------------------------------------- τ sweep
def _report(mse_change: list[float]):
    from probslot.posterior.pruning import PruningReport, TauResult

    taus = [0.0, 0.05, 0.1, 0.2, 0.3][: len(mse_change)]
    results = tuple(
        TauResult(
            tau=t,
            mean_kept=4 - 8 * t,
            mae_with_background=0.3 + t,
            mae_objects_only=1.3 - t,
            exact_with_background=0.5,
            decoder_flops=1.0,
            decoder_flops_saved=2 * t,
            model_flops_saved=t,
            decoder_seconds=1.0,
            decoder_time_saved=1.8 * t,
            mse=0.01 * (1 + d / 100),
            mse_change_pct=d,
            fg_ari=0.8,
            fg_ari_change=-t / 3,
        )
        for t, d in zip(taus, mse_change, strict=True)
    )
    return PruningReport(
        results=results,
        num_images=32,
        num_slots=4,
        additive=True,
        object_count="visible",
        mean_objects=2.5,
        baseline_mse=0.01,
        baseline_fg_ari=0.8,
        decoder_flops=1.0,
        model_flops=2.0,
        decoder_seconds=1.0,
        pi_sorted_mean=(0.4, 0.3, 0.2, 0.1),
        pi_quantiles={},
        pi_histogram=(),
        pi_bins=(),
        constant_mae=0.5,
    )


def _hlines(ax) -> dict[str, float]:
    return {
        line.get_label(): line.get_ydata()[0]
        for line in ax.lines
        if len(set(np.atleast_1d(line.get_ydata()))) == 1 and line.get_label().startswith("target")
    }


def test_sweep_draws_the_targets_and_clips_a_huge_mse(tmp_path: Path) -> None:
    from probslot.posterior.pruning import plot_sweep

    report = _report([0.0, 0.5, 2.0, 40.0, 300.0])
    with open(tmp_path / "s.png", "wb") as fh:
        fig = plot_sweep(report, fh, tau=0.1)
    assert (tmp_path / "s.png").stat().st_size > 0
    counts, compute, mse, seg = fig.axes
    assert counts.get_title() == "slot count" and compute.get_title() == "decoder compute saved"
    assert mse.get_title().startswith("reconstruction") and seg.get_title().startswith("segment")
    assert _hlines(counts) == {"target: MAE ≤ 0.5": 0.5}
    assert _hlines(compute) == {"target: FLOPs saved ≥ 40 %": 40}
    assert _hlines(mse) == {"target: ΔMSE ≤ +5 %": 5}
    for ax in fig.axes:
        assert ax.get_xlabel().startswith("relevance threshold τ") and ax.get_ylabel()
        assert any(line.get_label() == "headline τ = 0.1" for line in ax.lines)
    # the +300 % point does not squash the rest: the axis stops near 4× the target and the
    # clipped values are written out
    assert mse.get_ylim()[1] < 30 and "clipped" in mse.get_ylabel()
    assert {t.get_text() for t in mse.texts} == {"+40 %", "+300 %"}
    # τ = 0.2 saves 40 % at MAE 0.5 but costs +40 % MSE; τ = 0.3 misses the MAE
    assert "no τ meets all three targets" in fig.get_suptitle()
    ok = plot_sweep(_report([0.0, 0.5, 2.0, 4.0]), tmp_path / "t.png", tau=0.1)
    assert "all three targets met at τ = 0.2" in ok.get_suptitle()
    assert not math.isnan(mse.get_ylim()[0])


def test_sample_figure_headers_and_pi() -> None:
    from probslot.posterior.commands import sample_figure

    scenes = torch.rand(2, 3, 5, 7)
    parts = torch.rand(2, 3, 3, 5, 7)
    shares = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.25, 0.15]])
    fig = sample_figure(scenes, parts, shares, scale=4)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:4] == ["generated\nscene", "slot 1", "π 0.50", "π 0.60"]
    assert {"slot 2", "slot 3", "π 0.25", "π 0.15", "1", "2"} <= set(texts)
    assert "aggregate posterior" in fig.get_suptitle() and "share" in fig.get_suptitle()
